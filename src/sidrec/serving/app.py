"""HTTP serving of a trained run (TIGER or VQ-Rec) with FastAPI.

  GET  /health                       run kind, catalog size
  POST /recommend {"history": [...], "k": 10}            -> {"items": [{"item", "score", "title"}, ...]}
  POST /items     {"items": [{"item_id", "text", "title"?}, ...]}  VQ-Rec only: cold-start items, no retraining

User mistakes (unknown items, k too large, empty history, cold start on a TIGER run) answer 422 with the
same one-line message the CLI prints.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from sidrec.errors import SidrecError
from sidrec.serving.recommender import VQRecRecommender, load_recommender


class RecommendRequest(BaseModel):
    history: list[str] = Field(default_factory=list, description="raw item ids, oldest first")
    k: int = 10
    beam: int = 0


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
            items = rec.recommend(req.history, k=req.k, beam=req.beam)
        except SidrecError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"items": items}

    @app.post("/items")
    def add_items(req: NewItems) -> dict:
        if not isinstance(rec, VQRecRecommender):
            raise HTTPException(status_code=422, detail="new items need a VQ-Rec run (TIGER knows only its trained IDs)")
        try:
            rec.add_items([i.item_id for i in req.items], [i.text for i in req.items],
                          [i.title or i.text for i in req.items])
        except SidrecError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"added": len(req.items), "items": rec.n_items}

    return app
