"""The sections of a run configuration: task, federation, secure aggregation, attack, defense, admission, runtime.

Every setting has one flat key (what ``--set``, TOML files and Flower's run config use; unique across sections),
a default, a one-line help text, an optional range or choice check, and whether clients receive it: a client is
sent only the settings it needs, never a server-side path or the Home Authority's token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable

from .enums import (Attack, AttackMode, Auth, BTUCut, BTURanking, TriggerPosition, TriggerType, ClientDefense, DATASETS, HEProfile, Partition, Repair, SecureAggregation,
                    ThreatModel)

__all__ = [
    "TaskConfig",
    "FederationConfig",
    "SecureAggregationConfig",
    "AttackConfig",
    "DefenseConfig",
    "AdmissionConfig",
    "RuntimeConfig",
    "SECTIONS",
]

Check = Callable[[Any], "str | None"]


def _choice(*options: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and (v >= hi if hi_open else v > hi):
            return f"must be {'<' if hi_open else '<='} {hi}"
        return None

    return check


def setting(default: Any, help_text: str, check: Check | None = None, *, key: str | None = None,
            clients: bool = True) -> Any:
    """One configuration field: its default, help, check, flat key (default: the field name), sent to clients?"""
    if isinstance(default, StrEnum) and check is None:
        check = _choice(*[m.value for m in type(default)])
    return field(default=default, metadata={"help": help_text, "check": check, "key": key, "clients": clients})


@dataclass(frozen=True)
class TaskConfig:
    """What is learned and how each client trains (defaults follow the dataset's task kind)."""

    dataset: str = setting("digits", "digits | fashion-mnist | mnist | cifar10 (images); sst2 | hsol (text)",
                           _choice(*DATASETS))
    data_dir: str = setting("", "folder holding the dataset files; empty: the standard loader (needs the network, "
                            "except the embedded digits)")
    model: str = setting("cnn", "cnn | wrn-16-1 | wrn-16-4 (images); minilm | tiny-bert | a Hugging Face model id "
                         "(text); a text dataset defaults to minilm")
    text_layers: int = setting(0, "text: keep the first N transformer layers (0: all)", _range(0, 48))
    max_len: int = setting(48, "text: tokens per sentence", _range(8, 512))
    train_subset: int = setting(0, "use only the first N training examples after shuffling (0: all)", _range(0))
    local_epochs: int = setting(1, "local epochs per round", _range(1, 1000))
    batch_size: int = setting(32, "local batch size (text default 16)", _range(1, 100000))
    lr: float = setting(0.05, "local learning rate: SGD for images (0.05); AdamW for text (default 1e-4, at most "
                        "0.01)", _range(0.0, 10.0, lo_open=True))
    momentum: float = setting(0.9, "local SGD momentum (images)", _range(0.0, 1.0))


@dataclass(frozen=True)
class FederationConfig:
    """How many clients, how many rounds, how data is split, and the seed of everything."""

    num_clients: int = setting(5, "number of simulated clients (SuperNodes)", _range(1, 1000), clients=False)
    rounds: int = setting(5, "number of federated rounds (text default 3)", _range(1, 100000), clients=False)
    fraction_train: float = setting(1.0, "share of clients sampled per round", _range(0.0, 1.0, lo_open=True),
                                    clients=False)
    partition: Partition = setting(Partition.IID, "how the training set is split: iid | dirichlet")
    alpha: float = setting(0.5, "Dirichlet concentration (partition = dirichlet)", _range(0.0, None, lo_open=True))
    seed: int = setting(0, "seed for partitioning, sampling, initialisation and training", _range(0))
    stage_timeout_s: float = setting(600.0, "seconds to wait for replies in one stage",
                                     _range(0.0, None, lo_open=True), clients=False)


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Whether and how updates are encrypted so that the server sees only their sum."""

    mode: SecureAggregation = setting(SecureAggregation.NONE, "none | xmkckks", key="secure_aggregation")
    he_profile: HEProfile = setting(HEProfile.PRECISE, "xMK-CKKS parameter profile: precise | lean")
    key_epoch_rounds: int = setting(10, "start a new key epoch every K rounds (and when participants change)",
                                    _range(1))
    threat_model: ThreatModel = setting(ThreatModel.MALICIOUS, "whom secure aggregation defends against: "
                                        "honest-but-curious | malicious (server) | malicious-colluding (server and "
                                        "up to n-2 clients); docs/crypto.md")
    min_members: int = setting(3, "clients refuse a key epoch with fewer members (without a Home Authority this is "
                               "the only membership check)", _range(2, 100000))
    min_uploads: int = setting(3, "clients refuse to help decrypt a sum of fewer uploads", _range(2, 100000))
    threshold: float = setting(1.0, "members whose shares decrypt (t-of-n): a fraction in (0.5, 1] of the epoch's "
                               "members or an integer count; 1.0 = every member. Withstands c_max = min(t-1, "
                               "2t-n-1) colluding clients; docs/crypto.md", _range(0.5, 100000, lo_open=True))
    threshold_margin: int = setting(1, "t-of-n: start a new key epoch when fewer than t + margin members answered "
                                    "the last round", _range(0, 100000))


@dataclass(frozen=True)
class AttackConfig:
    """A simulated backdoor: which attack and trigger, on how many clients, at what rate, towards which label, from
    which round, and whether the attackers boost their update (model replacement)."""

    kind: Attack = setting(Attack.NONE, "data-poisoning backdoor: none | badnets | blended (images); badnets (rare "
                           "word) | addsent | syntactic | style (text)", key="attack")
    poisoned_clients: int = setting(0, "how many clients hold poisoned data (a seeded choice; at most num_clients)",
                                    _range(0))
    poison_rate: float = setting(0.1, "share of a poisoned client's examples that carry the trigger", _range(0.0, 1.0))
    target_label: int = setting(0, "the attack's target class (all-to-one)", _range(0))
    attack_mode: AttackMode = setting(AttackMode.ALL_TO_ONE, "images: all-to-one (every triggered image to "
                                      "target_label) | all-to-all (class y to y + 1 mod C)")
    trigger_type: TriggerType = setting(TriggerType.AUTO, "images: trigger pattern: auto (BadNets' 3x3 grid, "
                                        "Blended's noise) | grid | square | noise")
    trigger_size: int = setting(0, "images, BadNets: side of the square patch in pixels (0: 3)", _range(0, 64))
    trigger_position: TriggerPosition = setting(TriggerPosition.BOTTOM_RIGHT, "images, BadNets: bottom-right | "
                                                "top-left (fixed) | random (a new place per image)")
    trigger_seed: int = setting(-1, "images: seed of a noise pattern and of random trigger places (-1: the run's "
                                "seed)", _range(-1))
    blend_alpha: float = setting(0.2, "images, Blended: blend weight of the pattern", _range(0.0, 1.0, lo_open=True))
    attack_start_round: int = setting(1, "the poisoned clients attack from this round on (clean data before)",
                                      _range(1))
    attack_lr: float = setting(0.0, "the poisoned clients' own local lr while attacking (0: the run's lr); model "
                                "replacement trains gently so that its boosted model keeps the clean task",
                                _range(0.0, 10.0))
    attack_epochs: int = setting(0, "the poisoned clients' local epochs while attacking (0: the run's)",
                                 _range(0, 1000))
    boost_factor: float = setting(1.0, "model replacement (Bagdasaryan et al. 2020): a poisoned client sends "
                                  "global + boost_factor * (its update); 1: no boost; about num_clients replaces "
                                  "the model", _range(0.0, 10000.0, lo_open=True))
    poisoned_clients_defend: bool = setting(True, "whether clients holding poisoned data still run their defense "
                                            "(true: victims of poisoning; false: attackers that skip it)")


@dataclass(frozen=True)
class DefenseConfig:
    """The clients' training-time defense and the server's repair of the global model."""

    client_defense: ClientDefense = setting(ClientDefense.NONE, "defense in local training: none | abl (images) | "
                                            "btu (text)")
    repair: Repair = setting(Repair.NONE, "server-side repair of the global model: none | rnp | nad | finetune | "
                             "unlearn | fineprune "
                             "(text: finetune only, BTU's clean tune)", clients=False)
    clean_set_size: int = setting(0, "server's clean set for repair, held out of the clients' training data (text: "
                                  "drawn from the test split); clients need it to leave those examples out",
                                  _range(0))
    repair_last_rounds: int = setting(0, "run the server repair only in the last K rounds (0: every round)",
                                      _range(0), clients=False)
    aggregate_clip: float = setting(0.0, "CRFL-style bound on the L2 norm of the round's aggregate update (new global "
                                    "minus old, parameters only), applied to the decrypted sum: works under "
                                    "secure aggregation; 0: off", _range(0.0), clients=False)
    aggregate_clip_adaptive: float = setting(0.0, "adaptive bound on the aggregate update: this many times the median "
                                             "norm of the earlier rounds' aggregate updates (0: off)", _range(0.0),
                                             clients=False)
    aggregate_clip_window: int = setting(0, "the adaptive bound's median covers only the last K earlier rounds (0: "
                                         "all): update norms shrink as a federation converges, so a window clips "
                                         "late rounds harder than the median over all rounds does",
                                         _range(0, 100000), clients=False)
    aggregate_noise: float = setting(0.0, "std of Gaussian noise added to every parameter of the clipped aggregate "
                                     "(CRFL); 0: none", _range(0.0), clients=False)
    repair_val_fraction: float = setting(0.5, "share of the clean set the server keeps to validate a repair (the "
                                         "rest repairs); 0: no validation (text default)", _range(0.0, 0.9),
                                         clients=False)
    repair_max_ca_drop: float = setting(1.0, "a repair is accepted only if accuracy on the validation part drops by "
                                        "at most this many points; else it is retried at a tenth of the lr, then "
                                        "discarded for the unrepaired model; the validation part needs >= 100 / "
                                        "this images to resolve it", _range(0.0, 100.0), clients=False)
    repair_lr: float = setting(0.0, "learning rate of the repair (0: its default; images: fine-tune/fine-pruning/"
                               "NAD 0.1, "
                               "unlearn (Adam) 0.001 and RNP's unlearning 0.01; text clean tune: the run's lr, BTU's paper 2e-5)",
                               _range(0.0, 10.0), clients=False)
    repair_epochs: int = setting(0, "epochs of the image repair (0: its default: fine-tune and fine-pruning 10, "
                                 "NAD 10, unlearn 1 per round, RNP's mask "
                                 "recovery 20)", _range(0, 1000), clients=False)
    repair_lr_decay: bool = setting(False, "text clean tune: lr falls linearly to 0 over the epoch (not in the "
                                    "paper, which keeps it constant)", clients=False)
    repair_batch_size: int = setting(0, "batch size of the repair (0: its default: images 64 (RNP 128), text the "
                                     "run's batch_size, BTU's paper 64)", _range(0), clients=False)
    unlearn_rounds: int = setting(5, "unlearn repair: rounds of (find a universal perturbation, train on clean and "
                                  "perturbed images for repair_epochs epochs, default 1)", _range(1, 100),
                                  clients=False)
    unlearn_pgd_steps: int = setting(10, "unlearn repair: projected-gradient steps per universal perturbation",
                                     _range(1, 1000), clients=False)
    unlearn_eps: float = setting(2.0, "unlearn repair: bound on the universal perturbation's norm, in pixel units of "
                                 "[0, 1] images", _range(0.0, 1000.0, lo_open=True), clients=False)
    unlearn_norm: str = setting("l2", "unlearn repair: norm of the perturbation bound (l1 | l2 | linf)",
                                _choice("l1", "l2", "linf"), clients=False)
    unlearn_search: str = setting("targeted", "unlearn repair: targeted (each class tried, the most reachable kept) "
                                  "or untargeted (maximise the true labels' loss, as I-BAU)",
                                  _choice("targeted", "untargeted"), clients=False)
    rnp_prune_by: str = setting("threshold", "RNP: prune channels with mask <= t for t = 0, 0.05, ... (threshold, "
                                "the paper's) or the k lowest masks for k = 0, 1, ... (number); either sweep stops "
                                "before validation accuracy drops more than repair_max_ca_drop",
                                _choice("threshold", "number"), clients=False)
    rnp_max_threshold: float = setting(0.9, "RNP: largest mask threshold the threshold sweep tries",
                                       _range(0.0, 1.0), clients=False)
    rnp_max_pruned_fraction: float = setting(0.2, "RNP: largest share of the BN channels the number sweep prunes",
                                             _range(0.0, 1.0), clients=False)
    rnp_unlearn_stop_acc: float = setting(0.2, "RNP: unlearning (gradient ascent on the clean set) stops when clean "
                                          "accuracy falls to this floor", _range(0.0, 1.0), clients=False)
    rnp_unlearn_max_epochs: int = setting(20, "RNP: most unlearning epochs (the report says when the floor was not "
                                          "reached)", _range(1, 1000), clients=False)
    rnp_recover_lr: float = setting(0.2, "RNP: learning rate of the BN-channel masks while recovering",
                                    _range(0.0, 10.0, lo_open=True), clients=False)
    fineprune_max_drop: float = setting(4.0, "fine-pruning: prune the least active last-stage channels while clean "
                                        "accuracy on the repair part stays within this many points of the unpruned "
                                        "model (the paper's 4)", _range(0.0, 100.0, lo_open=True), clients=False)
    fineprune_max_fraction: float = setting(0.8, "fine-pruning: largest share of the last stage's channels pruned",
                                            _range(0.0, 1.0, lo_open=True, hi_open=True), clients=False)
    abl_isolation_rounds: int = setting(2, "ABL: rounds trained with the bounded loss; the isolation rule is scored "
                                        "in rounds 2..this and isolates at the first that fires (>= 2)",
                                        _range(2, 1000))
    abl_loss: str = setting("flooding", "ABL: bounded loss of the isolation rounds: flooding | lga",
                            _choice("flooding", "lga"))
    abl_gamma: float = setting(0.5, "ABL: loss floor of flooding / LGA", _range(0.0, 10.0, lo_open=True))
    abl_learned_from: float = setting(1.0, "ABL: an outlier's loss at the start of the isolation round is >= this",
                                      _range(0.0, 100.0, lo_open=True))
    abl_learned_to: float = setting(0.1, "ABL: ... and <= this at its end (learned within one round)",
                                    _range(0.0, 100.0, lo_open=True))
    abl_label_purity: float = setting(0.8, "ABL: isolate only if this share of the outliers carries one label",
                                      _range(0.0, 1.0, lo_open=True))
    abl_min_outlier_fraction: float = setting(0.02, "ABL: isolate only if the outliers are at least this share of "
                                              "the client's examples", _range(0.0, 1.0))
    abl_min_isolated: int = setting(5, "ABL: ... and at least this many", _range(1))
    abl_max_isolation_ratio: float = setting(0.2, "ABL: isolate at most this share of the client's examples",
                                             _range(0.0, 1.0, lo_open=True))
    abl_max_prediction_share: float = setting(0.5, "ABL: isolate only if the received model's most frequent "
                                              "predicted class holds at most this share of the outliers (all-to-one "
                                              "poison comes from every class; 1: off)", _range(0.0, 1.0, lo_open=True))
    abl_unlearn_lr: float = setting(5e-4, "ABL: gradient-ascent lr on the isolated examples (official 5e-4)",
                                    _range(0.0, 1.0, lo_open=True))
    abl_unlearn_epochs: int = setting(5, "ABL: at most this many ascent epochs per round", _range(0, 1000))
    abl_unlearn_stop_acc: float = setting(0.1, "ABL: stop ascending once the isolated examples' accuracy on their "
                                          "own labels is <= this", _range(0.0, 1.0))
    btu_cut_to: BTUCut = setting(BTUCut.PAD, "BTU's replacement for a flagged token's moved dims: pad (the paper) | "
                                 "own (the token's own pretrained values; keeps its meaning, and lets the backdoor "
                                 "back in)")
    btu_purity: float = setting(0.0, "BTU variant: cut only suspects whose sentences in the client's data carry one "
                                "label at least this share of the time, e.g. 0.95 (0: off, the paper)",
                                _range(0.0, 1.0))
    btu_ranking: BTURanking = setting(BTURanking.PAPER, "BTU's suspects: paper (every token of the three top-k "
                                      "rankings) | frequency (spare those in >= 2% of every label's sentences at the "
                                      "client or among the vocabulary's most frequent ids; docs/text.md)")
    btu_hold: bool = setting(False, "BTU in later rounds: cut the received model first and keep the cut rows fixed "
                             "while training (the rest of the model adapts to them)")


@dataclass(frozen=True)
class AdmissionConfig:
    """Pseudonymous admission of clients through a Home Authority (HA)."""

    mode: Auth = setting(Auth.NONE, "admission of clients: none | pseudonym (5G-style one-time pseudonyms via a "
                         "Home Authority)", key="auth")
    server_id: str = setting("fl-server", "this FL server's id at the Home Authority", key="auth_server_id")
    ha_url: str = setting("", "Home Authority service URL (deployment); empty: an in-process HA (simulation)",
                          key="auth_ha_url", clients=False)
    ha_token_file: str = setting("", "file with this FL server's bearer token for the HA service",
                                 key="auth_ha_token_file", clients=False)
    ha_ca: str = setting("", "CA certificate that signed the HA service's TLS certificate", key="auth_ha_ca",
                         clients=False)
    ha_db: str = setting("", "in-process HA database (simulation); empty: <out_dir>/auth/ha.sqlite", key="auth_ha_db",
                         clients=False)
    cred_dir: str = setting("", "simulation: folder of client credential files cred-<partition-id>.json (empty: "
                            "<out_dir>/auth); deployment nodes use --node-config auth-cred=FILE", key="auth_cred_dir",
                            clients=False)
    timeout_s: float = setting(120.0, "seconds admission waits for the handshake replies (its three steps together): "
                               "a silent node costs a run at most this once", _range(0.0, None,
                               lo_open=True), key="auth_timeout_s", clients=False)


@dataclass(frozen=True)
class RuntimeConfig:
    """Where results go, threads, logging, and testing aids."""

    out_dir: str = setting("", "where metrics.json, the plot and checkpoints go (flwr run default: "
                           "./runs/flwr-<run id>)", clients=False)
    threads_per_client: int = setting(1, "torch threads per ClientApp", _range(1, 64))
    verbose: bool = setting(False, "show Flower's and Ray's own logs", clients=False)
    client_state_dir: str = setting("", "folder where each simulated client keeps its defense state (ABL's isolation, "
                                    "BTU's cuts) per partition and round, so that --resume continues it; empty: a "
                                    "folder per run under the system's temp folder. A SuperNode's own folder is its "
                                    "--node-config state-dir (the server never chooses where a node writes)",
                                    clients=False)
    inject_dropout: str = setting("", "make a client fail once: '<stage>:<round>:<partition-id>' (stage: keygen, "
                                  "train, reveal, consistency, decrypt); for dropout tests")
    dropout_rate: float = setting(0.0, "simulated flaky fleet: probability that a client vanishes at each stage "
                                  "listed in dropout_stages (seeded per run seed, round, stage and client)",
                                  _range(0.0, 1.0))
    dropout_stages: str = setting("keygen,train,reveal,consistency,decrypt", "comma-separated stages where "
                                  "dropout_rate applies (decrypt: after the upload and the transcript signature)")


# section attribute name on RunConfig -> its dataclass, in display order
SECTIONS: dict[str, type] = {
    "task": TaskConfig,
    "federation": FederationConfig,
    "secure": SecureAggregationConfig,
    "attack": AttackConfig,
    "defense": DefenseConfig,
    "admission": AdmissionConfig,
    "runtime": RuntimeConfig,
}
