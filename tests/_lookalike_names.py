"""Generated names for look-alike tests and the watch benchmark: ours, the public index's, planted.

Deterministic (seeded).  "Our" names look like a company's private packages:
most carry the company prefix, many are plain two-word names of the kind a
public index also holds (``billing-client``), which is where honest
look-alikes, and so false alarms, come from.  Public names mix the same
vocabulary with made-up words, affixes and digits, the way a real listing does.
"""

from __future__ import annotations

import random

WORDS = """
access account accounts admin agent alert alerts analytics api app apps archive asset assets
audit auth backend backup balance bank batch billing blob bot bridge broker browser bucket
budget build bundle cache calendar campaign card cart catalog chart chat check checkout
cli client cloud cluster code common compute config connect connector console contract
core cost crawler cron crypto customer dashboard data database datasets debug deploy device
devices digest discovery dns docs document domain driver email engine etl event events
export extract feature feed file files filter finance flow form forms gateway geo graph
grid guard hash health helper helpers hook hub identity image import index insight invoice
invoices job jobs kafka key keys lab ledger lib link loader locale lock log logger logging
mail manager map market media merchant message metrics migrate mobile model models monitor
network notify oauth office order orders packet page parser partner pay payment payments
pipeline platform plugin policy portal price pricing print profile proxy queue quote
rate record redis refund registry render report reports request risk router rules runner
sales scan schedule schema search secret secrets security sender server service session
settings shared shipping signal sink sms source spark stats storage store stream sync
tax team template tenant test tests ticket token tools trace tracker trade transfer
tuning upload user users util utils vault vendor view wallet web webhook worker workflow
""".split()

_SYLLABLES = ("ka", "lo", "mi", "ter", "zen", "bo", "ra", "qui", "vex", "nor", "tal", "fi",
              "do", "sa", "pen", "gru", "lin", "ox", "ar", "el", "us", "ty", "xo", "ma")
_PUBLIC_AFFIXES_BEFORE = ("py", "python", "django", "flask", "pytest", "sphinx", "aws", "azure")
_PUBLIC_AFFIXES_AFTER = ("python", "py", "sdk", "client", "api", "tools", "utils", "lib", "cli",
                         "plugin", "extension", "wrapper", "test", "demo")
COMPANY = "acme"


def _made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def our_names(count: int, seed: int = 13) -> list[str]:
    """``count`` distinct canonical names such as ``acme-billing-worker`` or ``ledger-sync``."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        words = rng.sample(WORDS, rng.randint(1, 3))
        if rng.random() < 0.6:
            words.insert(0, COMPANY)
        elif len(words) == 1:
            words.append(rng.choice(WORDS))
        if len(words) > 1 and len(set(words)) == len(words):
            names.add("-".join(words))
    return sorted(names)


def public_names(count: int, seed: int = 800) -> list[str]:
    """``count`` distinct canonical names resembling a public index's listing."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        roll = rng.random()
        if roll < 0.0006:
            # A real listing holds honest near-misses of everyday words (lynk-cli, reids-file); this
            # share reproduces the reports per 1,000 of our names measured on a real listing (~3.5).
            words = rng.sample(WORDS, rng.randint(1, 2))
            word = words[0]
            at = rng.randrange(len(word))
            words[0] = word[:at] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[at + 1:]
            name = "-".join(words)
        elif roll < 0.35:
            name = "-".join(rng.sample(WORDS, rng.randint(1, 3)))
        elif roll < 0.55:
            base = rng.choice((rng.choice(WORDS), _made_up_word(rng)))
            if rng.random() < 0.5:
                name = f"{rng.choice(_PUBLIC_AFFIXES_BEFORE)}-{base}"
            else:
                name = f"{base}-{rng.choice(_PUBLIC_AFFIXES_AFTER)}"
        elif roll < 0.8:
            name = _made_up_word(rng)
        elif roll < 0.9:
            name = f"{_made_up_word(rng)}{rng.randint(0, 99)}"
        else:
            name = f"{_made_up_word(rng)}-{rng.choice(WORDS)}-{_made_up_word(rng)}"
        names.add(name)
    return sorted(names)
