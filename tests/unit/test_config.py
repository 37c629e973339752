import subprocess
import sys
from pathlib import Path

import pytest

from mirror.config import (
    ConfigError,
    MirrorConfig,
    UpstreamConfig,
    apply_flags,
    load_yaml,
    mirror_config_from,
)
from mirror.containerd import hosts_toml


def test_defaults_mirror_the_public_allowlist_only() -> None:
    cfg = MirrorConfig()
    assert (cfg.listen_host, cfg.listen_port, cfg.tag_ttl) == ("0.0.0.0", 5000, 300.0)
    assert cfg.upstreams_for("docker.io") == (UpstreamConfig("https://registry-1.docker.io"),)
    assert cfg.upstreams_for("ghcr.io") == (UpstreamConfig("https://ghcr.io"),)
    assert cfg.upstreams_for("evil.example.com") == ()


def test_yaml_with_credentials_prefix_and_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("HUB_TOKEN", "from-env")
    path = tmp_path / "shoal.yaml"
    path.write_text(
        f"""
listen: 127.0.0.1:6000
tag_ttl: 10
registries:
  index.docker.io:
    upstreams:
      - url: https://harbor.internal/
        path_prefix: /dockerhub-proxy/
        username: robot$puller
        password_file: {secret}
      - url: https://registry-1.docker.io
        username: me
        password_env: HUB_TOKEN
"""
    )
    cfg = mirror_config_from(load_yaml(path))
    harbor, hub = cfg.upstreams_for("docker.io")
    assert (cfg.listen_host, cfg.listen_port, cfg.tag_ttl) == ("127.0.0.1", 6000, 10.0)
    assert harbor.url == "https://harbor.internal" and harbor.path_prefix == "dockerhub-proxy"
    assert harbor.credentials is not None and harbor.credentials.password == "from-file"
    assert "from-file" not in repr(harbor)
    assert hub.credentials is not None and hub.credentials.password == "from-env"


def test_flags_override_file_and_keep_its_credentials(tmp_path: Path) -> None:
    cfg = mirror_config_from(
        {"registries": {"docker.io": [{"url": "https://h", "username": "u", "password": "p"}, "https://x"]}}
    )
    cfg = apply_flags(cfg, upstreams=["docker.io=https://h", "docker.io=http://127.0.0.1:5001"], tag_ttl=0)
    first, second = cfg.upstreams_for("docker.io")
    assert first.credentials is not None and second.url == "http://127.0.0.1:5001"
    assert cfg.tag_ttl == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"registries": {"docker.io": [{"url": "ftp://x"}]}}, "must be http"),
        ({"registries": {"docker.io": [{"url": "https://x", "username": "u"}]}}, "without password"),
        ({"registries": {"docker.io": [{"url": "https://x", "bogus": 1}]}}, "unknown keys"),
        ({"registries": {"docker.io": []}}, "list of upstreams"),
        ({"listen": "nope"}, "HOST:PORT"),
        ({"tag_ttl": -1}, "tag_ttl"),
    ],
)
def test_config_errors_are_one_line(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mirror_config_from(data)


def test_bad_upstream_flag() -> None:
    with pytest.raises(ConfigError, match="REGISTRY=URL"):
        apply_flags(MirrorConfig(), upstreams=["docker.io"])


def test_hosts_toml() -> None:
    text = hosts_toml("docker.io", "http://m:5000/")
    assert 'server = "https://registry-1.docker.io"' in text
    assert '[host."http://m:5000"]' in text and 'capabilities = ["pull", "resolve"]' in text
    assert "server" not in hosts_toml("_default", "http://m:5000")


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--upstream", "nonsense"],
        ["serve", "--listen", "127.0.0.1:notaport"],
        ["serve", "--config", "/nonexistent/shoal.yaml"],
    ],
)
def test_cli_reports_one_line_errors(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shoal", *args, "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shoal serve: error:"), proc.stderr


def test_example_config_loads(tmp_path: Path) -> None:
    secret = tmp_path / "harbor"
    secret.write_text("robot-token\n")
    example = (Path(__file__).parents[2] / "config" / "shoal.yaml").read_text()
    path = tmp_path / "shoal.yaml"
    path.write_text(example.replace("/run/secrets/harbor", str(secret)))
    cfg = mirror_config_from(load_yaml(path))
    harbor, hub = cfg.upstreams_for("docker.io")
    assert harbor.path_prefix == "dockerhub-proxy" and harbor.credentials is not None
    assert harbor.credentials.username == "robot$puller" and harbor.credentials.password == "robot-token"
    assert hub.url == "https://registry-1.docker.io"
    assert cfg.upstreams_for("quay.io") and not cfg.upstreams_for("evil.example")
