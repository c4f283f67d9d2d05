"""The management commands, in-process, on every selected store: what they print and how they exit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import SAMPLE_APP, Cli

# ---- enqueue / jobs ------------------------------------------------------------------------------------------------


def test_enqueue_prints_the_id_and_list_shows_it(cli: Cli) -> None:
    job_id = cli.ok("enqueue", "send_email", '{"to": "a@b.c"}').stdout.strip()
    assert len(job_id) == 36

    listed = cli.json("jobs", "list")
    assert listed["total"] == 1 and listed["limit"] == 20 and listed["offset"] == 0
    (job,) = listed["items"]
    assert job["id"] == job_id
    assert job["task"] == "send_email"
    assert job["payload"] == {"to": "a@b.c"}
    assert job["status"] == "pending"

    table = cli.ok("jobs", "list").stdout
    assert job_id in table and "send_email" in table


def test_enqueue_options_are_stored(cli: Cli) -> None:
    job = cli.json(
        "enqueue",
        "report",
        "[1, 2]",
        "--namespace",
        "default",
        "--queue",
        "reports",
        "--priority",
        "-5",
        "--delay",
        "3600",
        "--max-attempts",
        "7",
        "--user",
        "u1",
        "--unique-key",
        "k1",
    )
    assert job["queue"] == "reports"
    assert job["priority"] == -5
    assert job["max_attempts"] == 7
    assert job["user_id"] == "u1"
    assert job["unique_key"] == "k1"
    assert job["scheduled"] is True
    assert job["payload"] == [1, 2]

    again = cli.ok("enqueue", "report", "--unique-key", "k1")
    assert again.stdout.strip() == job["id"]
    assert "nothing new was stored" in again.stderr


def test_enqueue_run_at_and_payload_from_file_and_stdin(cli: Cli, tmp_path: Path) -> None:
    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"from": "file"}')
    job = cli.json("enqueue", "t", f"@{payload_file}", "--run-at", "2099-01-02T03:04:05Z", "--group", "g")
    assert job["payload"] == {"from": "file"}
    assert job["run_at"].startswith("2099-01-02T03:04:05")
    assert job["group_key"] == "g"

    from_stdin = json.loads(cli.ok("enqueue", "t", "-", "--json", input='{"from": "stdin"}').stdout)
    assert from_stdin["payload"] == {"from": "stdin"}


def test_jobs_list_filters_and_paging(cli: Cli) -> None:
    for i in range(3):
        cli.ok("enqueue", "a", json.dumps({"i": i}), "--queue", "q1")
    cli.ok("enqueue", "b", "--user", "alice")
    assert cli.json("jobs", "list", "--task", "a")["total"] == 3
    assert cli.json("jobs", "list", "--queue", "q1", "--limit", "2")["items"].__len__() == 2
    assert cli.json("jobs", "list", "--user", "alice")["total"] == 1
    assert cli.json("jobs", "list", "--status", "completed")["total"] == 0
    page = cli.json("jobs", "list", "--limit", "1", "--offset", "1")
    assert page["total"] == 4 and page["offset"] == 1 and len(page["items"]) == 1
    newest_first = [j["task"] for j in cli.json("jobs", "list")["items"]]
    assert newest_first[0] == "b"


def test_jobs_show_cancel_requeue_delete(cli: Cli) -> None:
    job_id = cli.ok("enqueue", "t", '{"x": 1}').stdout.strip()
    shown = cli.json("jobs", "show", job_id)
    assert shown["job"]["id"] == job_id and shown["attempts"] == []
    text = cli.ok("jobs", "show", job_id).stdout
    assert job_id in text and "No attempts yet" in text

    refused = cli("jobs", "requeue", job_id)
    assert refused.exit_code == 1
    assert "requeued" in refused.stderr and "Traceback" not in refused.output

    assert cli.json("jobs", "cancel", job_id)["status"] == "cancelled"
    assert cli.json("jobs", "requeue", job_id)["status"] == "pending"
    deleted = cli.ok("jobs", "delete", job_id)
    assert "Deleted" in deleted.stdout
    assert cli("jobs", "show", job_id).exit_code == 3


def test_run_now_makes_a_scheduled_job_due(cli: Cli) -> None:
    job = cli.json("enqueue", "t", "--delay", "3600")
    assert job["scheduled"] is True
    now = cli.json("jobs", "run-now", job["id"])
    assert now["scheduled"] is False and now["status"] == "pending"


def test_delete_needs_force_for_cancelled_jobs(cli: Cli) -> None:
    job_id = cli.ok("enqueue", "t").stdout.strip()
    cli.ok("jobs", "cancel", job_id)
    refused = cli("jobs", "delete", job_id)
    assert refused.exit_code == 1 and "deleted" in refused.stderr
    assert cli.json("jobs", "delete", job_id, "--force")["id"] == job_id


# ---- exit codes ----------------------------------------------------------------------------------------------------


def test_not_found_exits_3(cli: Cli) -> None:
    missing = "01900000-0000-7000-8000-000000000000"
    for args in (("jobs", "show", missing), ("jobs", "cancel", missing), ("jobs", "requeue", missing)):
        result = cli(*args)
        assert result.exit_code == 3, result.output
        assert "not found" in result.stderr.lower()
        assert "Traceback" not in result.output
    assert cli("namespaces", "show", "nope").exit_code == 3


def test_usage_errors_exit_2(cli: Cli) -> None:
    bad_json = cli("enqueue", "t", "{not json")
    assert bad_json.exit_code == 2
    assert "not valid JSON" in bad_json.stderr
    assert cli("enqueue", "t", "--delay", "5", "--run-at", "2030-01-01T00:00:00Z").exit_code == 2
    assert cli("enqueue", "t", "--run-at", "tomorrow").exit_code == 2
    assert cli("jobs", "list", "--status", "weird").exit_code == 2
    assert cli("jobs", "frobnicate").exit_code == 2
    assert cli("enqueue", "t", "@/nonexistent/payload.json").exit_code == 2


def test_rule_violations_exit_1_with_the_rule(cli: Cli) -> None:
    result = cli("enqueue", "t", "--max-attempts", "500")
    assert result.exit_code == 1
    assert "max_attempts" in result.stderr and "Traceback" not in result.output


def test_reserved_task_names_are_refused_and_nothing_is_stored(cli: Cli) -> None:
    result = cli("enqueue", "conveyor:webhook", '{"namespace": "victim"}')
    assert result.exit_code == 1
    assert "reserved" in result.output and "conveyor:" in result.output
    assert cli.json("stats")["total"] == 0


def test_bad_store_url_exits_2(tmp_path: Path) -> None:
    result = Cli("mysql://localhost/db")("stats")
    assert result.exit_code == 2
    assert "Unsupported store URL" in result.stderr


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/test", "redis://127.0.0.1:1/0"])
def test_unreachable_store_exits_4(url: str) -> None:
    result = Cli(url)("stats")
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output


def test_unloadable_app_exits_2(cli: Cli) -> None:
    assert cli("stats", app="no_such_module_here:app").exit_code == 2
    assert cli("stats", app="tests.cli.sample_app:nothing").exit_code == 2
    assert cli("stats", app="json:dumps").exit_code == 2


# ---- stats / queues / namespaces / schedules / migrate --------------------------------------------------------------


def test_stats(cli: Cli) -> None:
    cli.ok("enqueue", "t")
    job_id = cli.ok("enqueue", "t").stdout.strip()
    cli.ok("jobs", "cancel", job_id)
    cli.ok("enqueue", "t", "--delay", "600")
    stats = cli.json("stats")
    assert stats["pending"] == 2 and stats["cancelled"] == 1 and stats["scheduled"] == 1
    assert stats["total"] == 3 and stats["success_rate"] == 0.0
    assert "success rate" in cli.ok("stats").stdout


def test_queues_list_pause_resume(cli: Cli) -> None:
    cli.ok("enqueue", "t", "--queue", "mail")
    assert "paused" in cli.ok("queues", "pause", "mail").stdout
    queues = {q["name"]: q for q in cli.json("queues", "list")["items"]}
    assert queues["mail"]["paused"] is True
    assert queues["mail"]["counts"]["pending"] == 1
    assert "paused" in cli.ok("queues", "list").stdout
    cli.ok("queues", "resume", "mail")
    assert {q["name"]: q for q in cli.json("queues", "list")["items"]}["mail"]["paused"] is False


def test_queues_set_limits(cli: Cli) -> None:
    got = cli.json("queues", "set", "mail", "--rate", "10/m", "--concurrency", "4")
    assert got["rate_limit"] == {"limit": 10, "period": 60.0, "burst": None} and got["concurrency"] == 4
    cli.ok("queues", "pause", "mail")
    cli.ok("queues", "resume", "mail")
    listed = {q["name"]: q for q in cli.json("queues", "list")["items"]}["mail"]
    assert listed["concurrency"] == 4 and listed["rate_limit"]["limit"] == 10
    assert "10/60s" in cli.ok("queues", "list").stdout
    assert cli("queues", "set", "mail", "--rate", "none", "--burst", "2").exit_code != 0
    got = cli.json("queues", "set", "mail", "--rate", "3/s", "--burst", "2")
    assert got["rate_limit"] == {"limit": 3, "period": 1.0, "burst": 2} and got["concurrency"] == 4
    assert cli("queues", "set", "mail", "--rate", "fast").exit_code != 0
    assert cli("queues", "set", "mail").exit_code != 0
    got = cli.json("queues", "set", "mail", "--key-concurrency", "2")
    assert got["key_concurrency"] == 2 and got["concurrency"] == 4
    job = cli.json("enqueue", "t", "--queue", "mail", "--concurrency-key", "tenant-1")
    assert job["concurrency_key"] == "tenant-1"


def test_queues_set_rate_keys(cli: Cli) -> None:
    got = cli.json("queues", "set", "mail", "--rate", "10/m", "--burst", "2", "--rate-key", "payload.account")
    assert got["rate_key"] == "payload.account" and got["rate_limit"] == {"limit": 10, "period": 60.0, "burst": 2}
    assert "10/60s (burst 2) per payload.account" in cli.ok("queues", "list").stdout
    got = cli.json("queues", "set", "mail", "--burst", "5")  # the stored limit's burst
    assert got["rate_limit"]["burst"] == 5 and got["rate_key"] == "payload.account"
    cli.ok("queues", "pause", "mail")
    cli.ok("queues", "resume", "mail")
    assert {q["name"]: q for q in cli.json("queues", "list")["items"]}["mail"]["rate_key"] == "payload.account"
    bad = cli("queues", "set", "mail", "--rate-key", "payload.")
    assert bad.exit_code != 0 and "rate_key" in bad.stdout + bad.stderr
    assert cli.json("queues", "set", "mail", "--rate-key", "none")["rate_key"] is None
    cli.ok("enqueue", "t", "--queue", "mail")
    shown = cli.json("queues", "show", "mail")
    assert shown["settings"]["rate_limit"]["limit"] == 10 and shown["due"] == 1 and shown["processing"] == 0
    assert shown["rate"]["tokens"] == 5
    text = cli.ok("queues", "show", "mail").stdout
    assert "10/60s (burst 5)" in text and "5 left" in text and "due now" in text


def test_namespaces(cli: Cli) -> None:
    assert [ns["name"] for ns in cli.json("namespaces", "list")["items"]] == ["default"]
    created = cli.json(
        "namespaces", "create", "game", "--no-auto-run", "--max-attempts", "5", "--completed-retention", "2d"
    )
    assert created["auto_run"] is False and created["max_attempts"] == 5
    assert created["completed_retention"] == 2 * 86400
    assert cli("namespaces", "create", "game").exit_code == 1  # exists already

    updated = cli.json("namespaces", "update", "game", "--auto-run", "--description", "the game")
    assert updated["auto_run"] is True and updated["max_attempts"] == 5 and updated["description"] == "the game"
    assert cli.json("namespaces", "show", "game")["description"] == "the game"
    assert "game" in cli.ok("namespaces", "list").stdout
    assert cli("namespaces", "update", "game").exit_code == 2  # nothing to change
    assert cli("namespaces", "create", "bad name!").exit_code == 1

    # jobs enqueued there take its default max_attempts
    assert cli.json("enqueue", "t", "--namespace", "game")["max_attempts"] == 5

    cli.ok("namespaces", "delete", "game")
    assert cli("namespaces", "show", "game").exit_code == 3
    assert cli("namespaces", "delete", "default").exit_code == 1


def test_schedules_of_the_loaded_app(cli: Cli) -> None:
    (entry,) = cli.json("schedules", app=SAMPLE_APP)["items"]
    assert entry["name"] == "every-5-minutes" and entry["spec"] == "*/5 * * * *" and entry["task"] == "echo"
    assert entry["next_run_at"] and entry["source"] == "code" and entry["timezone"] == "UTC"
    assert "every-5-minutes" in cli.ok("schedules", app=SAMPLE_APP).stdout
    assert "every-5-minutes" in cli.ok("schedules", "list", app=SAMPLE_APP).stdout
    assert cli.json("schedules")["items"] == []


def test_runtime_schedules_from_the_command_line(cli: Cli) -> None:
    made = cli.json(
        "schedules", "create", "reset-berlin", "30 2 * * *", "echo", "--payload", '{"scope": "daily"}',
        "--tz", "Europe/Berlin", "--queue", "maintenance", "--backfill", "latest", "--backfill-window", "6h",
    )  # fmt: skip
    assert (made["source"], made["timezone"], made["backfill"], made["backfill_window"]) == (
        "runtime",
        "Europe/Berlin",
        "latest",
        6 * 3600,
    )
    assert [s["name"] for s in cli.json("schedules", "list")["items"]] == ["reset-berlin"]
    assert cli.json("schedules", "update", "reset-berlin", "--spec", "0 3 * * *", "--queue", "")["queue"] is None
    assert cli.json("schedules", "pause", "reset-berlin")["paused"] is True
    assert cli.json("schedules", "resume", "reset-berlin")["paused"] is False
    job = cli.json("schedules", "trigger", "reset-berlin")
    assert job["payload"] == {"scope": "daily"}
    (run,) = cli.json("schedules", "runs", "reset-berlin")["items"]
    assert run["manual"] is True and run["job_id"] == job["id"]
    assert "reset-berlin" in cli.ok("schedules", "show", "reset-berlin").stdout
    # a bad zone names the field; a code schedule's name is refused; unknown names exit 3
    bad = cli("schedules", "create", "x", "@daily", "echo", "--tz", "Mars/Base")
    assert bad.exit_code == 1 and "timezone" in bad.stderr
    taken = cli("schedules", "create", "every-5-minutes", "@daily", "echo", app=SAMPLE_APP)
    assert taken.exit_code == 1 and "declared in code" in taken.stderr
    assert cli("schedules", "delete", "every-5-minutes", app=SAMPLE_APP).exit_code == 1
    assert cli("schedules", "show", "nope").exit_code == 3
    cli.ok("schedules", "delete", "reset-berlin")
    assert cli.json("schedules", "list")["items"] == []


def test_workers_empty(cli: Cli) -> None:
    assert cli.json("workers")["items"] == []
    assert "No live workers" in cli.ok("workers").stdout


def test_migrate(cli: Cli) -> None:
    first = cli.ok("migrate").stdout
    assert "migration" in first or "up to date" in first
    assert "up to date" in cli.ok("migrate").stdout


def test_version_and_help(sqlite_cli: Cli) -> None:
    assert sqlite_cli.ok("--version").stdout.startswith("conveyor ")
    help_text = sqlite_cli.ok("--help").stdout
    for command in ("worker", "enqueue", "jobs", "stats", "queues", "workers", "namespaces", "bench", "serve"):
        assert command in help_text
    # commands other packages drop into conveyor/cli/ with a register() function are picked up (the server's token)
    if (Path(__file__).parents[2] / "src" / "conveyor" / "cli" / "token.py").exists():
        assert "token" in help_text


def test_worker_without_tasks_is_a_usage_error(sqlite_cli: Cli) -> None:
    result = sqlite_cli("worker")
    assert result.exit_code == 2
    assert "--app" in result.stderr


def test_serve_without_the_server_package_fails_clearly(sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "conveyor.server", None)  # as if the server were not installed
    result = sqlite_cli("serve")
    assert result.exit_code == 1
    assert "HTTP server is not available" in result.stderr and "Traceback" not in result.output


def test_jobs_list_pages_by_cursor(cli: Cli) -> None:
    for i in range(5):
        cli.ok("enqueue", "a", json.dumps({"n": i, "tag": "find" if i % 2 else "skip"}))
    first = cli.json("jobs", "list", "--limit", "2", "--sort", "created")
    assert first["next_cursor"]
    rest = cli.json("jobs", "list", "--limit", "10", "--sort", "created", "--cursor", first["next_cursor"])
    ids = [j["id"] for j in first["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 5 and rest["next_cursor"] is None
    assert "Next page: --cursor" in cli.ok("jobs", "list", "--limit", "2").stdout
    bad = cli("jobs", "list", "--cursor", "nonsense")
    assert bad.exit_code != 0 and "--cursor" in bad.output
    other = cli("jobs", "list", "--cursor", first["next_cursor"])  # made for --sort created
    assert other.exit_code != 0 and "sort" in other.output
    assert [j["payload"]["n"] for j in cli.json("jobs", "list", "--search", "FIND", "--sort=-created")["items"]] == [
        3,
        1,
    ]
