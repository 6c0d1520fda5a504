"""Which nodes a synthetic federation of N nodes has, its requesters, and the writer of each
node kind.

The eight national and provincial nodes come first, in a fixed order; larger federations add city
civic offices (one per pilot city) and consumer lenders, interleaved, so the first N nodes of any
federation are those of a federation of N. Their records use the same kinds as the provincial
pilot and the credit reference centre, so every scoring policy applies to them.
"""

from __future__ import annotations

from credex.lab.synth.agencies import (
    city_civic,
    court_enforcement,
    education_ministry,
    guangdong_pilot,
    hrss_employment,
    jiangsu_pilot,
    lender,
    pboc_credit_reference,
    volunteer_registry,
    zhima_commercial,
)
from credex.lab.synth.base import REGIONS, NodeSpec, NodeWriter, RequesterSpec

NODE_SPECS: tuple[NodeSpec, ...] = (
    volunteer_registry.SPEC,
    pboc_credit_reference.SPEC,
    education_ministry.SPEC,
    court_enforcement.SPEC,
    zhima_commercial.SPEC,
    jiangsu_pilot.SPEC,
    guangdong_pilot.SPEC,
    hrss_employment.SPEC,
)

REQUESTER_SPECS: tuple[RequesterSpec, ...] = (
    RequesterSpec("bank", "Bank of Jiangsu", "CN-JS"),
    RequesterSpec("school", "Nanjing University", "CN-JS"),
    RequesterSpec("employer", "Huawei Technologies", "CN-GD"),
    RequesterSpec("research", "China Youth and Children Research Center", "CN"),
)

NODE_IDS: tuple[str, ...] = tuple(s.id for s in NODE_SPECS)
DEFAULT_NODES = len(NODE_SPECS)

MAX_NODES = 100


def node_specs(count: int = DEFAULT_NODES) -> tuple[NodeSpec, ...]:
    """The first `count` synthetic nodes: the eight above, then city offices and lenders."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NODES:
        raise ValueError(f"nodes must be an integer from 1 to {MAX_NODES}, got {count!r}")
    cities = [city_civic.spec(r, c) for r in REGIONS for c in r.cities]
    extra: list[NodeSpec] = []
    lenders = 0
    while len(NODE_SPECS) + len(extra) < count:
        if cities and len(extra) % 2 == 0:
            extra.append(cities.pop(0))
        else:
            extra.append(lender.spec(lenders))
            lenders += 1
    return (NODE_SPECS + tuple(extra))[:count]


def node_spec(node_id: str) -> NodeSpec:
    """The spec of a synthetic node by id; KeyError names the known ids."""
    for spec in node_specs(MAX_NODES):
        if spec.id == node_id:
            return spec
    raise KeyError(
        f"unknown node {node_id!r} (known: {', '.join(NODE_IDS)}, civic-<city>, lender-…)"
    )


# kind (or, where a spec has none, node id) -> the writer that fills its database
WRITERS: dict[str, type[NodeWriter]] = {
    city_civic.KIND: city_civic.CityCivicWriter,
    lender.KIND: lender.LenderWriter,
    volunteer_registry.SPEC.id: volunteer_registry.VolunteerRegistryWriter,
    pboc_credit_reference.SPEC.id: pboc_credit_reference.PbocCreditReferenceWriter,
    education_ministry.SPEC.id: education_ministry.EducationMinistryWriter,
    court_enforcement.SPEC.id: court_enforcement.CourtEnforcementWriter,
    zhima_commercial.SPEC.id: zhima_commercial.ZhimaCommercialWriter,
    jiangsu_pilot.SPEC.id: jiangsu_pilot.JiangsuPilotWriter,
    guangdong_pilot.SPEC.id: guangdong_pilot.GuangdongPilotWriter,
    hrss_employment.SPEC.id: hrss_employment.HrssEmploymentWriter,
}
