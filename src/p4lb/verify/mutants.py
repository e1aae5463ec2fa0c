"""Deliberately broken variants of p4lb, one per property: the prover must refute each on its property."""

from __future__ import annotations

from p4lb.model.p4lb import Variant
from p4lb.model.spec import Prop

MUTANTS: dict[Prop, Variant] = {
    Prop.P1: Variant(eligible_ignores_health=True),
    Prop.P2: Variant(eligible_ignores_active=True),
    Prop.P3: Variant(no_pointer_wrap=True),
    Prop.P4: Variant(resyn_redispatch=True),
    Prop.P4b: Variant(midflow_pickup=True),
    Prop.P5: Variant(advance_on_refuse=True),
    Prop.P6: Variant(evict_on_collision=True),
    Prop.P7: Variant(in_place_updates=True),
    Prop.P8: Variant(refuse_uncounted=True),
}
