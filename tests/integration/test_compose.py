"""docker-compose.yml, checked without a Docker engine: structure, files it refers to, and every Flower and
BastionFL command line parsed by the real argument parsers of the installed versions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _parser(image: str):  # noqa: ANN202 - argparse parsers of the installed flwr
    if "superlink" in image:
        from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

        return _parse_args_run_superlink()
    if "supernode" in image:
        from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

        return _parse_args_run_supernode()
    raise AssertionError(image)


def test_services_and_files_exist(compose: dict) -> None:
    services = compose["services"]
    assert {"superlink", "superexec-serverapp", "ha"} <= set(services)
    assert sum(name.startswith("supernode-") for name in services) >= 3
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).exists(), name
    assert (REPO / "docker" / "make-certs.sh").exists()


def test_flower_commands_parse_with_installed_flwr(compose: dict) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        if "flwr/" in image:
            args = _parser(image).parse_args(svc["command"])
            assert getattr(args, "insecure", False) is False, f"{name} must use TLS"
        elif name.startswith("superexec"):
            from flwr.supercore.cli.flower_superexec import _parse_args

            _parse_args().parse_args(svc["command"])


def test_supernodes_cover_distinct_partitions(compose: dict) -> None:
    configs = [svc["command"][svc["command"].index("--node-config") + 1]
               for name, svc in compose["services"].items() if name.startswith("supernode-")]
    parsed = [dict(item.split("=") for item in c.split()) for c in configs]
    n = {p["num-partitions"] for p in parsed}
    assert len(n) == 1 and int(n.pop()) == len(parsed)
    assert sorted(int(p["partition-id"]) for p in parsed) == list(range(len(parsed)))


def test_ha_command_parses_with_bastionfl_cli(compose: dict) -> None:
    from bastionfl.cli.ha import _parsers

    command = compose["services"]["ha"]["command"]
    assert command[0] == "serve"
    _parsers()["serve"].parse_args(command[1:])
