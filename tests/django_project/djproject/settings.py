"""Settings of the test Django project (tests/django): every store location comes from the environment, which the
tests set before Django starts here and in the worker processes they launch.

- DJANGO_TEST_SQLITE: the SQLite file of the `default` database; the `default` task backend keeps its jobs in it
  too (no URL: derived from the database) and joins its transactions.
- DJANGO_TEST_PG_SCHEMA / CONVEYOR_TEST_PG_URL: when set, a `pg` database (Django's tables in that schema on the
  shared PostgreSQL server) and a `pg` task backend whose jobs live in the same database (schema of the URL), joining
  the `pg` database's transactions; two tries per task.
- CONVEYOR_TEST_REDIS_URL: when set, a `redis` task backend (no database to join) that gives up after one try.
"""

import importlib.util
import os

SECRET_KEY = "conveyor-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["conveyor.django", "shop"]
if importlib.util.find_spec("django.tasks") is None:  # Django < 6: the backport is an app of its own
    INSTALLED_APPS.insert(0, "django_tasks")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_TEST_SQLITE"]},
}
TASKS = {
    "default": {
        "BACKEND": "conveyor.django.ConveyorBackend",
        "QUEUES": [],
        "OPTIONS": {"TASK_MODULES": ["shop.extra"]},
    },
}

if os.environ.get("DJANGO_TEST_PG_SCHEMA"):
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "OPTIONS": {"options": f"-c search_path={os.environ['DJANGO_TEST_PG_SCHEMA']}"},
    }
    TASKS["pg"] = {
        "BACKEND": "conveyor.django.ConveyorBackend",
        "QUEUES": [],
        "OPTIONS": {
            "URL": os.environ["CONVEYOR_TEST_PG_URL"],
            "DATABASE": "pg",
            "MAX_ATTEMPTS": 2,
            "TASK_MODULES": ["shop.extra"],
        },
    }

if os.environ.get("CONVEYOR_TEST_REDIS_URL"):
    TASKS["redis"] = {
        "BACKEND": "conveyor.django.ConveyorBackend",
        "QUEUES": [],
        "OPTIONS": {"URL": os.environ["CONVEYOR_TEST_REDIS_URL"], "MAX_ATTEMPTS": 1, "TASK_MODULES": ["shop.extra"]},
    }
