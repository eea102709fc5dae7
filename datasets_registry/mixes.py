"""The reward-model training mixture of §4 / Table 6: the top dataset of each kind plus PRM800K.

Per-source counts (Table 6) sum to 259,851. Components are prepared with the mix's seed; the 60,908-pair
components are the registered size-matched splits. A component with fewer rows than its count (e.g. a
local sample) is used whole and the shortfall is reported as `<component>/short_by`.
"""

from __future__ import annotations

from datasets_registry.spec import mix_spec, register

RM_MIX = (
    ("ultrafeedback-fg", 60_908),
    ("stack-exchange-60k", 60_908),
    ("hh-rlhf-60k", 60_908),
    ("helpsteer", 9_270),
    ("prm800k", 6_949),
    ("nectar-60k", 60_908),
)
RM_MIX_SIZE = 259_851

register(mix_spec(
    name="rm-mix",
    kind="preference",
    source_type="mixed",
    group="mix",
    description="Reward-model mixture (Table 6): UltraFeedback FG, StackExchange, HH-RLHF, HelpSteer, PRM800K, Nectar.",
    components=RM_MIX,
    paper_size=RM_MIX_SIZE,
    expected_size=RM_MIX_SIZE,
    rule="the Table 6 counts taken from each component as prepared by its own loader (seeded), pooled",
    rule_source="§4, App. B Table 6; released split preference_big_mixture (259,851 rows)",
    released_as="tulu25-preference_big_mixture",
    license="per component",
))
