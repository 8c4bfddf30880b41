from __future__ import annotations

from apps.compute.adapters.process import engine_base_environment


def test_engine_processes_never_inherit_the_workers_secrets(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/x")
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    monkeypatch.setenv("INFERIA_FERNET_KEYS", "k1,k2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    env = engine_base_environment()
    assert {"DATABASE_URL", "SECRET_KEY", "INFERIA_FERNET_KEYS", "AWS_SECRET_ACCESS_KEY"}.isdisjoint(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["VLLM_LOGGING_LEVEL"] == "INFO"
    assert "PATH" in env
