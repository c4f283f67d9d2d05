"""A task outside any `tasks` module: workers find it because TASK_MODULES names this module."""

try:
    from django.tasks import task  # Django 6
except ImportError:
    from django_tasks import task


@task()
def shout(word: str) -> str:
    return word.upper()
