"""Every shell example of the README runs, on small files of the same formats that this test writes.

The README's ```bash blocks are parsed; each `sidrec ...` line runs through the real entry point with
`$D` / `$M` pointing at a temporary tree where every referenced input file exists in its format
(chosen by its name: *.inter.json = LETTER interactions, *.item.json = item text, *.index.json =
released IDs, *.txt = S3-Rec lines, *.csv = MiniOneRec rows), so an example cannot drift from the code. ```sh blocks need an optional extra or model (the LLM section)
and are not run here."""

import gzip
import json
import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
N_USERS, N_ITEMS, LENGTH = 10, 8, 7


def _seqs():
    return {f"U{u}": [str((u + k) % N_ITEMS) for k in range(LENGTH)] for u in range(N_USERS)}


def _content(name: str) -> str:
    if name.endswith(".inter.json"):
        return json.dumps({u: [int(i) for i in s] for u, s in _seqs().items()})
    if name.endswith(".index.json"):
        return json.dumps({str(i): [f"<a_{i % 3}>", f"<b_{i % 4}>", f"<c_{i}>"] for i in range(N_ITEMS)})
    if name.endswith(".item.json"):
        return json.dumps({str(i): {"title": f"thing {i}", "categories": [["Beauty", f"c{i % 3}"]]}
                           for i in range(N_ITEMS)})
    if name.endswith(".txt"):
        return "".join(" ".join([u, *s]) + "\n" for u, s in _seqs().items())
    if name.endswith(".csv"):
        rows = ["user_id,history_item_id,item_id"]
        for u, s in _seqs().items():
            rows.append(f'{u},"[{", ".join(s[:-1])}]",{s[-1]}')
        return "\n".join(rows) + "\n"
    raise AssertionError(f"README example reads {name}: teach tests/test_readme_examples.py its format")


def _write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    text = _content(name)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def shell_examples() -> list[str]:
    lines, block = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if block and line.strip() and not line.startswith("make "):
            lines.append(line.split("  #")[0].strip())
    return lines


def test_readme_has_shell_examples():
    assert sum(x.startswith("sidrec ") for x in shell_examples()) >= 5


def test_every_readme_shell_example_runs(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {}
    ran = 0
    for line in shell_examples():
        m = re.fullmatch(r"([A-Z]+)=(\S+)", line)
        if m:  # D=../shared/data -> a tree the test writes
            value = re.sub(r"\$(\w+)", lambda v: env[v.group(1)], m.group(2))
            env[m.group(1)] = str(tmp_path / "shared") if m.group(1) == "D" else value
            continue
        assert line.startswith("sidrec "), f"README shell example is not a sidrec command: {line}"
        args = shlex.split(re.sub(r"\$(\w+)", lambda v: env[v.group(1)], line))[1:]
        for a in args:
            if a.startswith(str(tmp_path / "shared")) and not Path(a).exists():
                _write(Path(a))
        code, _, se = cli(*args)
        assert code == 0, f"README example failed: {line}\n{se}"
        ran += 1
    assert ran >= 5
