"""``superres serve``: a local web app to upscale and compare, and a REST API (FastAPI, served by uvicorn).

Imported only by the ``serve`` command and by code that embeds the app: ``import superres`` stays cheap.
"""

from superres.serve.app import ServeConfig, check_bind, create_app, model_list
from superres.serve.jobs import Job, JobQueue

__all__ = ["Job", "JobQueue", "ServeConfig", "check_bind", "create_app", "model_list"]
