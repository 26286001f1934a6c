"""HTTP serving of a trained run (TIGER or VQ-Rec) with FastAPI.

  GET  /health                       run kind, catalog size
  POST /recommend {"history": [...], "k": 10, "sample_temperature"?: T, "seed"?: S}
                                     -> {"items": [{"item", "score", "title", "new"}, ...]}
  POST /items     {"items": [{"item_id", "text", "title"?}, ...]}  cold-start items by text, no retraining
                  (TIGER and VQ-Rec runs; all or nothing: a bad request leaves the catalog unchanged)

User mistakes (unknown items, k too large, empty history, a repeated or empty new item, cold start on
published IDs) answer 422 with the same one-line message the CLI prints.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from sidrec.errors import SidrecError
from sidrec.serving.recommender import load_recommender


class RecommendRequest(BaseModel):
    history: list[str] = Field(default_factory=list, description="raw item ids, oldest first")
    k: int = 10
    beam: int = 0
    sample_temperature: float = Field(0.0, ge=0.0, description="0 = beam search; T > 0 = sample k distinct items")
    seed: int = 0
    epsilon: float = Field(0.0, ge=0.0, le=1.0, description="cold start: max share of new items in the top k")


class NewItem(BaseModel):
    item_id: str
    text: str
    title: str | None = None


class NewItems(BaseModel):
    items: list[NewItem]


def create_app(run: str | Path, device: str = "cpu") -> FastAPI:
    rec = load_recommender(run, device=device)
    app = FastAPI(title="sidrec", description=f"recommendations from {run}")

    @app.get("/health")
    def health() -> dict:
        return {"run": str(run), "kind": rec.kind,
                "items": rec.n_items}

    @app.post("/recommend")
    def recommend(req: RecommendRequest) -> dict:
        try:
            items = rec.recommend(req.history, k=req.k, beam=req.beam, sample_temperature=req.sample_temperature,
                                  seed=req.seed, epsilon=req.epsilon)
        except SidrecError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"items": items}

    @app.post("/items")
    def add_items(req: NewItems) -> dict:
        try:
            rec.add_items([i.item_id for i in req.items], [i.text for i in req.items],
                          [i.title or i.text for i in req.items])
        except SidrecError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"added": len(req.items), "items": rec.n_items}

    return app
