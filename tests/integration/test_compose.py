"""docker-compose.yml, checked without a Docker engine: ``docker-compose config`` (where the binary exists), every
flag of every Flower command accepted by the installed entry points' ``--help``, every file a container's command
names present in the volume the setup service prepares for it (with uid 49999 ownership and 0600 secrets), health
checks and ``depends_on`` conditions, restart policies, the HA unpublished, images pinned to the project's flwr."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FLWR = version("flwr")
WORKDIR = {"flwr/": "/app", "bastionfl-superexec": "/app", "bastionfl-ha": "/opt/bastionfl"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@functools.cache
def _help_flags(entry_point: str) -> set[str]:
    exe = Path(sys.executable).with_name(entry_point)
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))


def _entry_point(name: str, svc: dict) -> str | None:
    image = svc.get("image", "")
    if image.startswith("flwr/superlink"):
        return "flower-superlink"
    if image.startswith("flwr/supernode"):
        return "flower-supernode"
    if name.startswith("superexec"):
        return "flower-superexec"
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose; no engine needed)")
    # the distribution's docker-compose runs on the system python3 with its own packages: keep a virtual
    # environment's python3 (on PATH) and PYTHON* settings that other code may have set out of its way
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    out = subprocess.run([binary, "-f", str(REPO / "docker-compose.yml"), "config", "-q"], capture_output=True,
                         text=True, timeout=120, cwd=REPO, env=env)
    if out.returncode != 0 and "Traceback (most recent call last)" in out.stderr:
        pytest.skip("the installed docker-compose cannot start here (a Python error in its own imports): "
                    + out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr


def test_every_flower_flag_is_accepted_by_the_installed_entry_points(compose: dict) -> None:
    checked = 0
    for name, svc in compose["services"].items():
        entry = _entry_point(name, svc)
        if entry is None:
            continue
        flags = {a.split("=")[0] for a in svc["command"] if a.startswith("--")}
        assert flags <= _help_flags(entry), (name, flags - _help_flags(entry))
        assert "--insecure" not in flags or name.startswith("superexec-clientapp"), f"{name} must use TLS"
        checked += 1
    assert checked >= 8


def test_flags_of_the_local_deployment_are_accepted_too(tmp_path: Path) -> None:
    from bastionfl.deploy.loopback import LoopbackFederation, make_supernode_key

    keys = [make_supernode_key(tmp_path / f"n{i}.key") for i in range(2)]
    fed = LoopbackFederation(tmp_path, 2, certs={"ca": tmp_path / "ca", "cert": tmp_path / "c", "key": tmp_path / "k"},
                             supernode_keys=keys)
    started: list[list[str]] = []
    fed._start = lambda _name, argv: started.append(argv)  # type: ignore[method-assign]
    fed._wait_port = lambda _port, _name="", timeout=0: None  # type: ignore[method-assign]
    real_run = subprocess.run
    registered: list[list[str]] = []
    subprocess.run = lambda argv, **kw: registered.append(argv)  # type: ignore[assignment]
    try:
        with fed:
            started.append(fed.run_command(tmp_path, "x=1"))
    finally:
        subprocess.run = real_run  # type: ignore[assignment]
    assert len(registered) == 2 and registered[0][1:3] == ["supernode", "register"]
    assert "--enable-supernode-auth" in started[0]
    for argv in started:
        entry = Path(argv[0]).name
        flags = {a for a in argv if a.startswith("--")}
        if entry == "flwr":
            help_flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", subprocess.run(
                [argv[0], "run", "--help"], capture_output=True, text=True, timeout=60).stdout))
            assert flags <= help_flags, flags - help_flags
        else:
            assert flags <= _help_flags(entry), (entry, flags - _help_flags(entry))


def test_images_are_pinned_to_the_project_flwr_version(compose: dict) -> None:
    pins = [d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
            if d.startswith("flwr[")]
    assert pins == [f"flwr[simulation]=={FLWR}"]
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("flwr/"):
            assert svc["image"].endswith(f":{FLWR}"), name
        if "build" in svc and "args" in svc["build"]:
            assert svc["build"]["args"]["FLWR_VERSION"] == FLWR, name
    dockerfile = (REPO / "docker" / "superexec.Dockerfile").read_text()
    assert f"ARG FLWR_VERSION={FLWR}" in dockerfile


def test_health_checks_dependencies_and_restart_policies(compose: dict) -> None:
    services = compose["services"]
    assert services["setup"]["restart"] == "no"
    for name, svc in services.items():
        if name == "setup":
            continue
        assert svc.get("restart") == "unless-stopped", name
        deps = svc.get("depends_on")
        assert isinstance(deps, dict) and deps, f"{name}: depends_on needs conditions"
        for dep, cond in deps.items():
            want = "service_completed_successfully" if dep == "setup" else "service_healthy"
            assert cond == {"condition": want}, (name, dep)
            if want == "service_healthy":
                assert "healthcheck" in services[dep], dep
    assert "ports" not in services["ha"]  # the HA is reached by the ServerApp on the compose network only


def test_ha_image_is_slim() -> None:
    text = (REPO / "docker" / "ha.Dockerfile").read_text()
    assert "--no-deps" in text
    for heavy in ("torch", "tenseal", "transformers", "flwr"):
        assert heavy not in text.split("FROM", 1)[1].split("\n", 1)[1], heavy


def _volume_of(svc: dict, container_path: PurePosixPath) -> tuple[str, PurePosixPath] | None:
    """The named volume holding ``container_path`` in this service and the path inside that volume."""
    best = None
    for spec in svc.get("volumes", []):
        volume, target = spec.split(":")[:2]
        target_p = PurePosixPath(target)
        if container_path == target_p or target_p in container_path.parents:
            if best is None or len(target_p.parts) > len(best[1].parts):
                best = (volume, target_p)
    if best is None:
        return None
    return best[0], container_path.relative_to(best[1])


def _paths(name: str, svc: dict) -> list[PurePosixPath]:
    """Files a service's command (and node config) names, as absolute container paths."""
    workdir = next(v for k, v in WORKDIR.items() if svc.get("image", "").startswith(k))
    out = []
    for arg in svc["command"]:
        for token in shlex.split(arg) if " " in arg else [arg]:
            value = token.split("=", 1)[1] if token.startswith("auth-cred=") else token.split("=", 1)[-1]
            if re.search(r"\.(crt|pem|key|sqlite|kek|token|json)$", value):
                p = PurePosixPath(value)
                out.append(p if p.is_absolute() else PurePosixPath(workdir) / p)
    return out


def _owner() -> tuple[int, int] | None:
    """The container user's ids, when the test can chown to them (as root)."""
    return (49999, 49999) if os.geteuid() == 0 else None


def _prepared(compose: dict, tmp_path: Path):  # noqa: ANN202
    """Runs the setup service's ``deploy prepare`` into ``tmp_path/files``: its arguments, that folder, its mounts."""
    from bastionfl.cli.deploy import prepare_parser
    from bastionfl.deploy.prepare import prepare_deployment

    services = compose["services"]
    args = prepare_parser().parse_args(services["setup"]["command"][2:])
    root = tmp_path / "files"
    prepare_deployment(root, args.nodes, superlink_names=(args.superlink_name, args.ip),
                       ha_names=(args.ha_name, args.ip), owner=_owner())
    setup_mounts = {spec.split(":")[0]: PurePosixPath(spec.split(":")[1]) for spec in services["setup"]["volumes"]}
    return args, root, setup_mounts


def test_every_file_a_container_names_is_prepared_in_its_volume(compose: dict, tmp_path: Path) -> None:
    services = compose["services"]
    args, root, setup_mounts = _prepared(compose, tmp_path)
    owner = _owner()
    out_dir = PurePosixPath(args.out)

    def host_path(volume: str, inner: PurePosixPath) -> Path:
        return root / setup_mounts[volume].relative_to(out_dir) / inner

    wanted: list[tuple[str, PurePosixPath, dict]] = []
    for name, svc in services.items():
        if name != "setup":
            wanted += [(name, p, svc) for p in _paths(name, svc)]
    # the node config's credential path is read where the node's ClientApp runs
    for name, p, _svc in list(wanted):
        if name.startswith("supernode-") and p.name == "credential.json":
            wanted.remove((name, p, _svc))
            wanted.append((name, p, services[name.replace("supernode", "superexec-clientapp")]))
    run_config = (REPO / "docker" / "compose-run-config.txt").read_text()
    for key in ("auth-ha-token-file", "auth-ha-ca"):
        value = re.search(rf'{key}="([^"]+)"', run_config).group(1)
        wanted.append(("superexec-serverapp", PurePosixPath(value), services["superexec-serverapp"]))
    assert len(wanted) >= 15
    for name, path, svc in wanted:
        found = _volume_of(svc, path)
        assert found is not None, f"{name}: {path} is in no mounted volume"
        file = host_path(*found)
        assert file.is_file(), f"{name}: {path} -> {file} was not prepared"
        if owner is not None:
            assert (file.stat().st_uid, file.stat().st_gid) == owner, file
        if file.suffix in (".key", ".kek", ".token", ".sqlite") or file.name == "credential.json":
            assert file.stat().st_mode & 0o077 == 0, f"{file} must be 0600"
    state = root / setup_mounts["superlink-state"].relative_to(out_dir)
    assert state.is_dir() and ("superlink-state:/app/state" in services["superlink"]["volumes"])
    if owner is not None:  # the SuperLink (uid 49999) creates its database there
        assert state.stat().st_uid == 49999 and state.stat().st_mode & 0o700 == 0o700


def test_supernodes_cover_distinct_partitions_with_their_own_credentials(compose: dict) -> None:
    nodes = {name: svc for name, svc in compose["services"].items() if name.startswith("supernode-")}
    configs = [svc["command"][svc["command"].index("--node-config") + 1] for svc in nodes.values()]
    parsed = [dict(item.split("=", 1) for item in shlex.split(c)) for c in configs]
    assert {p["num-partitions"] for p in parsed} == {str(len(parsed))}
    assert sorted(int(p["partition-id"]) for p in parsed) == list(range(len(parsed)))
    clientapp_volumes = [compose["services"][n.replace("supernode", "superexec-clientapp")]["volumes"][0]
                         for n in nodes]
    assert len(set(clientapp_volumes)) == len(nodes)  # no two nodes share a credential


def test_every_node_has_a_state_folder_of_its_own(compose: dict, tmp_path: Path) -> None:
    """A node refuses a malicious threat model without ``state-dir``: each SuperNode names one, it lies in a volume
    its ClientApp's SuperExec mounts read-write and no other node mounts, prepared by setup as a writable folder."""
    services = compose["services"]
    args, root, setup_mounts = _prepared(compose, tmp_path)
    owner = _owner()
    seen = set()
    nodes = [name for name in services if name.startswith("supernode-")]
    assert len(nodes) == args.nodes
    for name in nodes:
        svc = services[name]
        config = dict(item.split("=", 1) for item in shlex.split(svc["command"][svc["command"].index("--node-config")
                                                                               + 1]))
        assert config.get("state-dir"), f"{name} has no state-dir"
        clientapp = services[name.replace("supernode", "superexec-clientapp")]
        found = _volume_of(clientapp, PurePosixPath(config["state-dir"]))
        assert found is not None, f"{name}: its state folder is in no volume of its ClientApp"
        spec = next(v for v in clientapp["volumes"] if v.startswith(found[0] + ":"))
        assert not spec.endswith(":ro") and found[0] not in seen
        seen.add(found[0])
        folder = root / setup_mounts[found[0]].relative_to(PurePosixPath(args.out)) / found[1]
        assert folder.is_dir(), folder
        if owner is not None:
            assert folder.stat().st_uid == 49999 and folder.stat().st_mode & 0o700 == 0o700
        assert found[0] in compose["volumes"]


def test_ha_and_setup_commands_parse_with_bastionfl_cli(compose: dict) -> None:
    from bastionfl.cli.deploy import prepare_parser
    from bastionfl.cli.ha import _parsers

    command = compose["services"]["ha"]["command"]
    assert command[:2] == ["ha", "serve"]
    _parsers()["serve"].parse_args(command[2:])
    setup = compose["services"]["setup"]["command"]
    assert setup[:2] == ["deploy", "prepare"]
    prepare_parser().parse_args(setup[2:])
