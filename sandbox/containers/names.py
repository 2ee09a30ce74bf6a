"""Container names: the docker-style names generated when `--name` is not given, and
the rule a name must follow.

Generated names are `adjective_surname`, drawn from a subset of the lists in moby's
pkg/namesgenerator (which podman uses too), with its one exception kept: Steve
Wozniak is not boring. Only `sandbox.containers.store` decides whether a name is
free; this module only proposes and checks spelling. No imports beyond the stdlib.
"""

from __future__ import annotations

import os
import re

# moby/pkg/namesgenerator: the left list (adjectives) and part of the right list
# (scientists and hackers).
ADJECTIVES = (
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome",
    "beautiful", "blissful", "bold", "boring", "brave", "busy", "charming", "clever",
    "compassionate", "competent", "condescending", "confident", "cool", "cranky",
    "crazy", "dazzling", "determined", "distracted", "dreamy", "eager", "ecstatic",
    "elastic", "elated", "elegant", "eloquent", "epic", "exciting", "fervent",
    "festive", "flamboyant", "focused", "friendly", "frosty", "funny", "gallant",
    "gifted", "goofy", "gracious", "great", "happy", "hardcore", "heuristic",
    "hopeful", "hungry", "infallible", "inspiring", "intelligent", "interesting",
    "jolly", "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical",
    "modest", "musing", "mystifying", "naughty", "nervous", "nice", "nifty",
    "nostalgic", "objective", "optimistic", "peaceful", "pedantic", "pensive",
    "practical", "priceless", "quirky", "quizzical", "recursing", "relaxed",
    "reverent", "romantic", "sad", "serene", "sharp", "silly", "sleepy", "stoic",
    "strange", "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting",
    "unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly",
    "wonderful", "xenodochial", "youthful", "zealous", "zen",
)
SURNAMES = (
    "agnesi", "albattani", "allen", "almeida", "antonelli", "archimedes", "ardinghelli",
    "aryabhata", "austin", "babbage", "banach", "bardeen", "bartik", "bassi", "bell",
    "benz", "bhabha", "bhaskara", "black", "blackwell", "bohr", "booth", "borg",
    "bose", "brahmagupta", "brattain", "brown", "burnell", "cannon", "carson",
    "cartwright", "cerf", "chandrasekhar", "chatelet", "chatterjee", "clarke",
    "colden", "cori", "cray", "curie", "darwin", "davinci", "dijkstra", "dubinsky",
    "easley", "edison", "einstein", "elion", "engelbart", "euclid", "euler", "faraday",
    "fermat", "fermi", "feynman", "franklin", "galileo", "gates", "goldberg",
    "goldstine", "goldwasser", "golick", "goodall", "hamilton", "hawking", "heisenberg",
    "hellman", "hermann", "hertz", "hodgkin", "hofstadter", "hopper", "hugle",
    "hypatia", "jackson", "jennings", "jepsen", "johnson", "joliot", "jones", "kalam",
    "keldysh", "kepler", "khorana", "kilby", "knuth", "kowalevski", "lalande",
    "lamarr", "lamport", "leakey", "leavitt", "lehmann", "lewin", "lichterman",
    "liskov", "lovelace", "lumiere", "mahavira", "margulis", "matsumoto", "maxwell",
    "mayer", "mccarthy", "mcclintock", "mclean", "meitner", "mendel", "mendeleev",
    "merkle", "minsky", "mirzakhani", "montalcini", "moore", "morse", "moser",
    "napier", "nash", "neumann", "newton", "nightingale", "nobel", "noether",
    "northcutt", "noyce", "panini", "pare", "pascal", "pasteur", "payne", "perlman",
    "pike", "poincare", "poitras", "ptolemy", "raman", "ramanujan", "ride", "ritchie",
    "robinson", "roentgen", "rosalind", "rubin", "saha", "sammet", "sanderson",
    "shannon", "shaw", "shirley", "shockley", "sinoussi", "snyder", "solomon",
    "spence", "stonebraker", "sutherland", "swanson", "swartz", "swirles", "taussig",
    "tesla", "tharp", "thompson", "torvalds", "turing", "varahamihira", "visvesvaraya",
    "volhard", "wescoff", "wilbur", "wiles", "williams", "wilson", "wing", "wozniak",
    "wright", "wu", "yalow", "yonath", "zhukovsky",
)

# docker's and podman's rule for container names (moby daemon/names: RestrictedNamePattern).
NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
MAX_NAME = 253


def generate(retry: int = 0) -> str:
    """A random adjective_surname; from the second retry on, with a digit appended,
    as moby's GetRandomName(retry) does."""
    while True:
        name = f"{_pick(ADJECTIVES)}_{_pick(SURNAMES)}"
        if name != "boring_wozniak":  # "Steve Wozniak is not boring" (moby)
            break
    if retry > 0:
        name += str(_pick(range(10)))
    return name


def _pick(choices: tuple[str, ...] | range) -> str:
    # os.urandom rather than `secrets` (which imports hmac and hashlib, ~3 ms on the
    # `sbx run` path); a 4-byte draw's modulo bias is immaterial for a name.
    return str(choices[int.from_bytes(os.urandom(4), "little") % len(choices)])


def is_valid(name: str) -> bool:
    return len(name) <= MAX_NAME and NAME_PATTERN.fullmatch(name) is not None


def is_full_id(text: str) -> bool:
    """A 64-hex container id (lowercase, as sbx writes them)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


__all__ = ["ADJECTIVES", "SURNAMES", "generate", "is_full_id", "is_valid"]
