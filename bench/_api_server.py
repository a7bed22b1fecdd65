"""The API exactly as `emps api` serves it (emps.api.app.run: uvicorn, one process, 127.0.0.1),
plus one route only bench/api.py mounts: `GET /bench/constant`, a bare FastAPI endpoint returning
a constant, measured on the same server as the product's routes.

    python bench/_api_server.py PORT [PROFILE]   # with the bench's EMPS_* environment

With PROFILE (a file name), every thread of the server (the event loop, the thread pool the
sync routes and checks run in) runs under cProfile, and `POST /bench/profile` writes their
statistics, merged, to that file (bench/api.py --profile).

The constant route goes through the same application, so through the same middleware (request
id, Prometheus metrics, one JSON log line per request): what it costs is the floor every route
of this server pays before doing its own work.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading


def main() -> None:
    from fastapi.responses import JSONResponse

    profile = sys.argv[2] if len(sys.argv) > 2 else None
    profiles: list[cProfile.Profile] = []

    def profile_this_thread(*_args) -> None:
        # The first event of a new thread: from now on its own profiler replaces this hook.
        profiler = cProfile.Profile()
        profiles.append(profiler)
        profiler.enable()

    import emps.api.app as api

    product_app = api.create_app

    def with_constant(settings=None):
        app = product_app(settings)

        @app.get("/bench/constant", include_in_schema=False)
        async def constant() -> JSONResponse:
            return JSONResponse({"ok": True})

        if profile is not None:

            @app.post("/bench/profile", include_in_schema=False)
            async def dump_profile() -> JSONResponse:
                for profiler in profiles:
                    profiler.create_stats()
                pstats.Stats(*profiles).dump_stats(profile)
                return JSONResponse({"threads": len(profiles)})

        return app

    api.create_app = with_constant  # run() builds the app through this name
    if profile is not None:
        threading.setprofile(profile_this_thread)
        profile_this_thread()
    api.run(port=int(sys.argv[1]))


if __name__ == "__main__":
    main()
