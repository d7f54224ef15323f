"""Reading a Prometheus exposition in tests, with ``prometheus_client``'s own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def parse_samples(text: str) -> dict[str, float]:
    """Every sample as ``name{label="value",...}`` (labels sorted by name) -> value.

    The parser raises on anything that is not the text format, so a malformed
    exposition fails the test that reads it.
    """
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def sample_names(text: str) -> set[str]:
    """The names of every sample (``_bucket``, ``_count``, ``_total`` suffixes included)."""
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}
