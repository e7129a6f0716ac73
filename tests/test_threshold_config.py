"""The t-of-n and flaky-fleet settings: what they accept, what they refuse (one line naming the key)."""

from __future__ import annotations

import pytest

from bastionfl.config import ConfigError, RunConfig
from bastionfl.config.checks import threshold_rule
from bastionfl.crypto.threshold import ThresholdRule

HE = {"secure_aggregation": "xmkckks", "num_clients": 20}


def test_defaults_mean_every_member_decrypts_and_no_simulated_dropout():
    cfg = RunConfig.build(**HE)
    assert cfg.secure.threshold == 1.0 and threshold_rule(cfg) is None and cfg.runtime.dropout_rate == 0.0
    assert set(cfg.runtime.dropout_stages.split(",")) == {"keygen", "train", "reveal", "consistency", "decrypt"}


def test_fraction_and_count():
    assert threshold_rule(RunConfig.build(**HE, threshold=0.6, auth="pseudonym")) == ThresholdRule(ppm=600_000)
    assert threshold_rule(RunConfig.build(**HE, threshold=12, auth="pseudonym")) == ThresholdRule(count=12)
    assert threshold_rule(RunConfig.build(**HE, threshold=0.6, auth="pseudonym",
                                          threat_model="malicious-colluding")).threshold_for(20) == 12


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"threshold": 0.6}, "auth = pseudonym"),  # a malicious server would enrol t members of its own
    ({"threshold": 0.6, "auth": "pseudonym", "threat_model": "honest-but-curious"}, "signed transcripts"),
    ({"threshold": 10, "auth": "pseudonym"}, "exceed half"),
    ({"threshold": 21, "auth": "pseudonym"}, "exceed half"),
    ({"threshold": 12.5, "auth": "pseudonym"}, "integer count"),
    ({"threshold": 0.5, "auth": "pseudonym"}, "threshold"),
    ({"dropout_stages": "decrypt,fuse"}, "dropout_stages"),
    ({"dropout_rate": 1.5}, "dropout_rate"),
])
def test_refused(settings, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        RunConfig.build(**HE, **settings)
    assert "\n" not in str(info.value)
