"""P2P settings from the `p2p:` section and flags (`p2p.config`)."""

from pathlib import Path

import pytest

from mirror.config import ConfigError, size_setting
from p2p.config import default_advertise, node_config, section, tracker_config


def test_no_tracker_means_no_p2p() -> None:
    assert node_config({}, "127.0.0.1", 5000) is None


def test_flags_give_a_node_config_with_defaults(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = node_config({}, "10.0.0.5", 5000, trackers=["http://t1:7000/", "http://t2:7000"], secret_file=str(secret))
    assert config is not None
    assert config.trackers == ("http://t1:7000", "http://t2:7000")
    assert config.advertise == "http://10.0.0.5:5000"
    assert config.secret == b"s3cret"
    assert config.node_id.endswith("-5000")
    assert config.piece_size is None and config.upload_limit is None
    assert "s3cret" not in repr(config)


def test_the_file_section_and_flags_merge_with_flags_winning() -> None:
    data = section(
        {
            "p2p": {
                "trackers": ["http://t:7000"],
                "advertise": "http://node-a.example:5000",
                "node_id": "node-a",
                "piece_size": "4MiB",
                "upload_limit": "100M",
                "heartbeat_interval": 2,
                "follow_stall": 3,
                "concurrency": 6,
            }
        }
    )
    config = node_config(data, "0.0.0.0", 5000, piece_size="8M")
    assert config is not None
    assert config.advertise == "http://node-a.example:5000"
    assert config.node_id == "node-a"
    assert config.piece_size == 8 << 20
    assert config.upload_limit == 100 << 20
    assert config.heartbeat_interval == 2
    assert config.swarm.follow_stall == 3 and config.swarm.concurrency == 6


def test_a_single_tracker_key_is_accepted() -> None:
    config = node_config({"tracker": "http://t:7000"}, "127.0.0.1", 5000)
    assert config is not None and config.trackers == ("http://t:7000",)


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", "http://127.0.0.1:5000"), ("node-a", "http://node-a:5000"), ("::1", "http://[::1]:5000")],
)
def test_advertise_defaults_to_a_concrete_listen_address(host: str, expected: str) -> None:
    assert default_advertise(host, 5000) == expected


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_a_wildcard_listen_address_needs_advertise(host: str) -> None:
    with pytest.raises(ConfigError, match="--advertise"):
        node_config({}, host, 5000, trackers=["http://t:7000"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trackers": ["t:7000"]}, "tracker URL"),
        ({"trackers": ["http://t"], "advertise": "node:5000"}, "advertise URL"),
        ({"trackers": ["http://t"], "node_id": "has space"}, "node id"),
        ({"trackers": ["http://t"], "piece_size": "lots"}, "not a size"),
        ({"trackers": ["http://t"], "secret_file": "/nonexistent/secret"}, "cannot read"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        node_config({}, "127.0.0.1", 5000, **kwargs)  # type: ignore[arg-type]


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        node_config({}, "127.0.0.1", 5000, trackers=["http://t"], secret_file=str(tmp_path / "secret"))


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        section({"p2p": {"trackers": [], "tracekr": 1}})
    with pytest.raises(ConfigError, match="p2p.tracker"):
        section({"p2p": {"tracker": {"listen": ":7000", "ttl": 3}}})


def test_tracker_config_from_flags_and_file() -> None:
    data = section({"p2p": {"tracker": {"listen": "0.0.0.0:7000", "node_ttl": 12, "piece_size": "1M"}}})
    config = tracker_config(data, stall_timeout=20)
    assert (config.host, config.port) == ("0.0.0.0", 7000)
    assert config.scheduler.node_ttl == 12 and config.scheduler.stall_timeout == 20
    assert config.scheduler.piece_size == 1 << 20
    assert tracker_config({}, listen="127.0.0.1:7100").port == 7100
    with pytest.raises(ConfigError, match="--listen"):
        tracker_config({})


@pytest.mark.parametrize(
    ("text", "size"), [(4194304, 4194304), ("4194304", 4194304), ("4MiB", 4 << 20), ("1.5k", 1536), ("2 GB", 2 << 30)]
)
def test_sizes(text: object, size: int) -> None:
    assert size_setting(text, "x") == size


@pytest.mark.parametrize("text", ["0", "-1", "4 XB", "", True])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ConfigError):
        size_setting(text, "x")
