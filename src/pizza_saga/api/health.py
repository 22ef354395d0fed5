"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pizza_saga.api.deps import Service
from pizza_saga.api.problems import problem

router = APIRouter(tags=["health"])

WHAT_TO_DO = {
    "temporal": "Temporal does not answer: start it (`pizza server`) or check TEMPORAL_ADDRESS",
    "worker": "no worker polls the task queue: start one with `pizza worker`",
    "store": "the store database does not answer: check PIZZA_DATABASE_URL",
}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Something the service needs is missing"}})
async def readyz(service: Service) -> JSONResponse:
    """Temporal reachable, a worker polling the task queue, the store reachable."""
    ready = await service.readiness()
    checks = {"temporal": ready.temporal, "worker": ready.worker, "store": ready.store}
    if ready.missing:
        detail = "; ".join(WHAT_TO_DO[name] for name in ready.missing)
        return problem(503, detail, checks=checks, missing=ready.missing)
    return JSONResponse({"status": "ready", "checks": checks})
