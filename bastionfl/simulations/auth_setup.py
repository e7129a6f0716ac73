"""Enrolment for simulated federations with pseudonym admission: an in-process Home Authority and one credential
file per simulated client.

Only the simulated clients read the credential files (``cred-<partition-id>.json``); the FL server reads the HA
database through the in-process ``HomeAuthority`` (it plays the HA's role in simulation) and never opens a
credential file. In deployment the HA is its own service and each SuperNode holds only its own credential.
"""

from __future__ import annotations

from pathlib import Path

from bastionfl.config import ConfigError, RunConfig

__all__ = ["SIM_LABEL", "prepare_simulated_ha"]

SIM_LABEL = "sim-client-{}"  # the HA's registry label (the "identity") of simulated client i


def prepare_simulated_ha(cfg: RunConfig, out_dir: Path) -> None:
    """Create the HA database and KEK, enrol ``num_clients`` clients for ``auth_server_id``, write 0600 credentials.

    Idempotent: an existing database and existing credential files are kept (a resumed run goes on with the
    pseudonyms its clients hold). ``out_dir`` must be the run's ``cfg.runtime.out_dir`` unless both auth paths are set.
    """
    from bastionfl.auth import AuthError, FileCredentialStore, HomeAuthority, load_or_create_kek
    from bastionfl.server.admission import in_process_ha_paths, simulated_credential_dir

    if not cfg.runtime.out_dir and not (cfg.admission.ha_db and cfg.admission.cred_dir):
        raise ConfigError("config key 'out_dir': pseudonym admission in simulation needs out_dir "
                          "(or auth_ha_db and auth_cred_dir) so that server and clients find the HA files")
    if cfg.runtime.out_dir and Path(cfg.runtime.out_dir).resolve() != Path(out_dir).resolve():
        raise ConfigError(f"config key 'out_dir': {cfg.runtime.out_dir!r} differs from the run folder {str(out_dir)!r}")
    db, kek_file = in_process_ha_paths(cfg)
    cred_dir = Path(simulated_credential_dir(cfg))
    creds = [cred_dir / f"cred-{i}.json" for i in range(cfg.federation.num_clients)]
    if db.exists() and all(c.exists() for c in creds):
        return
    for folder in {db.parent, cred_dir}:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    kek = load_or_create_kek(kek_file, create=not db.exists())
    ha = HomeAuthority.open(db, kek)
    try:
        for i, path in enumerate(creds):
            if path.exists():
                continue
            try:
                credential = ha.enroll(SIM_LABEL.format(i), [cfg.admission.server_id])
            except AuthError:
                raise ConfigError(f"client {i} is enrolled but its credential file is missing; delete "
                                  f"{db.parent} to enrol the simulated clients afresh") from None
            FileCredentialStore(path).save(credential)  # created 0600, fsync'd, atomically renamed
    finally:
        ha.store.close()
