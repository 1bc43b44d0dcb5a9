"""The look-alike index: every kind of likeness found, with the right one of our names; quiet."""

from __future__ import annotations

import pytest

from _lookalike_names import our_names, public_names
from namekeeper.lookalike import Kind, LookalikeIndex, Thresholds

OURS = ["acme-billing", "acme-payments", "acme-mail", "zorbit-sync", "acme-invoice-renderer",
        "acme-warehouse-scheduler", "acme-billing-client"]

# (public name, the one of ours it imitates, kind)
PLANTED = [
    ("acme-biling", "acme-billing", Kind.OMITTED),
    ("acme-billlng", "acme-billing", Kind.VISUAL),         # l for i
    ("acme-paymennts", "acme-payments", Kind.REPEATED),
    ("acme-paymenxts", "acme-payments", Kind.INSERTED),
    ("acme-paymnets", "acme-payments", Kind.SWAPPED),
    ("acme-paymants", "acme-payments", Kind.SUBSTITUTED),  # a for e: not neighbours
    ("acme-paymentd", "acme-payments", Kind.KEYBOARD),     # d beside s
    ("acme-rnail", "acme-mail", Kind.VISUAL),              # rn for m
    ("acme-bi11ing", "acme-billing", Kind.VISUAL),         # 1 for l
    ("acme-payrnents", "acme-payments", Kind.VISUAL),
    ("acme-0ther-mail", None, None),                       # nothing of ours
    ("sync-zorbit", "zorbit-sync", Kind.SWAPPED_WORDS),
    ("acmebilling", "acme-billing", Kind.SEPARATOR),
    ("acme-pay-ments", "acme-payments", Kind.SEPARATOR),
    ("acme-payments-python", "acme-payments", Kind.AFFIX),
    ("py-acme-payments", "acme-payments", Kind.AFFIX),
    ("pyacme-mail", "acme-mail", Kind.AFFIX),
    ("acme-payments-sdk", "acme-payments", Kind.AFFIX),
    ("acme-payments2", "acme-payments", Kind.AFFIX),
    ("acme-payments-2", "acme-payments", Kind.AFFIX),
    # acme-billing-client is ours: dropping its -client is a combo-squat too.
    ("acme-billing-clients", "acme-billing-client", Kind.INSERTED),
    # Two edits on a long name; the shorter acme-billing is not the one imitated.
    ("acme-invoise-renderar", "acme-invoice-renderer", Kind.EDIT),
    ("acme-warehouse-schedulre", "acme-warehouse-scheduler", Kind.SWAPPED),
]


@pytest.fixture(scope="module")
def listing() -> list[str]:
    return public_names(20_000)


def test_every_planted_lookalike_is_found_with_its_kind_and_target(listing):
    planted = [public for public, _, _ in PLANTED]
    index = LookalikeIndex(OURS)
    found = {hit.public: hit for hit in index.scan(listing + planted, listing + planted)}
    for public, ours, kind in PLANTED:
        hit = found.get(public)
        if ours is None:
            assert hit is None, hit
            continue
        assert hit is not None, public
        assert (hit.ours, hit.kind) == (ours, kind), public
    # The generated listing holds nothing that looks like these names.
    assert set(found) <= set(planted)


def test_distance_is_the_alignment_distance_of_the_names_as_written():
    index = LookalikeIndex(OURS)
    assert index.match("acme-paymnets").distance == 1  # an adjacent swap is one edit
    assert index.match("acme-bi11ing").distance == 2
    assert index.match("acmebilling").distance == 1


def test_our_own_names_and_allowed_names_are_not_reported():
    index = LookalikeIndex(OURS, allow=["acme-biling", "acme-payments-*"], prefixes=["acme-"])
    for name in OURS:
        assert index.match(name) is None
    assert index.match("acme-biling") is None
    assert index.match("acme-payments-sdk") is None  # allowed by the glob
    assert index.match("acme-paymnets") is not None  # the glob does not cover this one


def test_an_allowed_glob_is_canonicalised_like_the_names_it_matches():
    index = LookalikeIndex(OURS, allow=["Acme_Payments.*"], prefixes=["acme-"])
    assert index.allowed("acme-payments-sdk")
    assert index.match("acme-payments-sdk") is None


def test_prefixes_report_any_new_name_in_our_namespace():
    index = LookalikeIndex(OURS, prefixes=["Acme_"])
    hit = index.match("acme-something-new")
    assert (hit.kind, hit.ours) == (Kind.PREFIX, "acme-")
    # A likeness of one of our names says more than the prefix, and wins.
    assert index.match("acme-biling").kind is Kind.OMITTED
    assert index.match("acme") is None  # the bare word is not in the namespace
    assert LookalikeIndex(OURS).match("acme-something-new") is None


def test_short_names_do_not_flood():
    index = LookalikeIndex(["core", "tox-ab", "red-io"])
    # one edit away from a name of 4 to 5 letters (separators aside): an honest other project, not reported
    for public in ["care", "cor", "coree", "tox-ac", "red-in", "red-i0x"]:
        assert index.match(public) is None, public
    # a separator change is still reported: nothing else to explain it
    assert index.match("toxab").kind is Kind.SEPARATOR
    # distance 2 only for long names
    assert LookalikeIndex(["acme-mailer"]).match("acme-mialre") is None
    assert Thresholds().max_distance(len("acmeinvoicerenderer")) == 2


def test_the_closest_of_our_names_is_named():
    index = LookalikeIndex(["acme-billing", "acme-billings"])
    assert index.match("acme-bililngs").ours == "acme-billings"
    assert index.match("acme-bilings").ours == "acme-billings"


def _quiet(index: LookalikeIndex, public: str, listing: list[str]):
    """What a scan of the listing says about ``public`` (None: not reported)."""
    hits = index.scan([public], listing + [public])
    return hits[0] if hits else None


EVERYDAY = [f"{w}-{i}" for w in ("cart", "upload", "broker", "cloud", "cache", "tools", "chart", "cli",
                                 "payment", "payments") for i in range(3)]


def test_generic_names_are_quiet_but_new_words_are_reported():
    index = LookalikeIndex(["chart-upload", "broker-cloud", "cache-tools"])
    # Everyday words for an everyday name: honest projects.
    assert _quiet(index, "cart-upload", EVERYDAY) is None
    assert _quiet(index, "cloud-broker", EVERYDAY) is None
    assert _quiet(index, "cache-tools-cli", EVERYDAY) is None
    # A misspelt word nobody else uses is what a typo-squat looks like.
    assert _quiet(index, "chrt-upload", EVERYDAY).kind is Kind.OMITTED
    # Without the listing, everything is reported.
    assert index.match("cart-upload").kind is Kind.OMITTED


def test_a_distinctive_name_is_reported_on_any_likeness():
    index = LookalikeIndex(["acme-payments"])
    # "payment" is an everyday word, but "acme" is ours: report.
    assert _quiet(index, "acme-payment", EVERYDAY).kind is Kind.OMITTED
    assert _quiet(index, "payments-acme", EVERYDAY).kind is Kind.SWAPPED_WORDS


def test_our_placeholders_and_a_squatters_variants_do_not_make_our_word_everyday():
    ours = ["acme-billing", "acme-payments", "acme-mail", "acme-ledger"]
    index = LookalikeIndex(ours)
    squats = ["acme-biling", "acme-paymnets", "acme-rnail", "acmeledger"]
    listing = EVERYDAY + ours + squats + [f"{w}-{i}" for w in ("billing", "ledger") for i in range(3)]
    found = {hit.public for hit in index.scan(listing, listing)}
    assert found == set(squats)


def test_precision_on_a_generated_listing_stays_low():
    ours = our_names(2_000)
    listing = public_names(50_000)
    hits = LookalikeIndex(ours).scan(listing, listing)
    assert len(hits) <= 0.01 * len(ours), hits[:20]
