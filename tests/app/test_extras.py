"""Each optional feature used without its extra says which extra to install. A package is made
unimportable the way Python itself documents (``sys.modules[name] = None``), the rest is real."""

from __future__ import annotations

import sys

import pytest

from app.cli import main
from app.config import Settings
from app.db.session import Database, make_engine
from app.extras import MissingExtraError
from app.services import alloys
from app.worker.executor import make_executor


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    def block(*modules: str) -> None:
        for module in modules:
            monkeypatch.setitem(sys.modules, module, None)

    return block


def test_alloy_featurisation_names_the_alloys_extra(without):
    without("hea_bench")
    with pytest.raises(MissingExtraError, match=r"pip install 'kanscope\[alloys\]'") as err:
        alloys.descriptors_for({"Fe": 0.5, "Ni": 0.5})
    assert err.value.status_code == 501


def test_postgresql_url_names_the_postgres_extra(without):
    without("psycopg")
    with pytest.raises(MissingExtraError, match=r"kanscope\[postgres\]"):
        make_engine("postgresql://kanscope@127.0.0.1:5432/kanscope")


def test_celery_executor_and_worker_name_the_distributed_extra(without, sqlite_url, capsys):
    without("celery")
    db = Database(sqlite_url)
    try:
        with pytest.raises(MissingExtraError, match=r"kanscope\[distributed\]"):
            make_executor(Settings(executor="celery"), db)
    finally:
        db.dispose()
    assert main(["worker"]) == 2
    assert "pip install 'kanscope[distributed]'" in capsys.readouterr().err


def test_sqlite_and_the_local_executor_need_no_extra(without, sqlite_url):
    without("hea_bench", "psycopg", "celery", "kombu")
    db = Database(sqlite_url)
    executor = make_executor(Settings(executor="local"), db)
    try:
        assert type(executor).__name__ == "LocalExecutor"
    finally:
        executor.shutdown()
        db.dispose()
