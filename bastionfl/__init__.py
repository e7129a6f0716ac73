"""BastionFL: secure federated learning on Flower (xMK-CKKS, pseudonym admission, backdoor defenses)."""

__version__ = "0.1.0"
