"""Captions made from class names, for CLIP training and zero-shot classification.

Labelled data sets without captions (digits, CIFAR-10, STL-10, ImageFolder) get one caption per
template and class: ``class_prompts(...)[c]`` lists class ``c``'s captions in template order. CLIP
training samples one of them per image (see :mod:`tauray_trainers.data.views`); zero-shot
classification embeds all of them and averages per class (Radford et al. 2021, prompt
ensembling).

Every caption of class ``c`` describes every image of class ``c``: a batch of B images over C
classes holds about B/C captions of each image's class, not one. The training set marks them as
one caption group (the class) so that the loss counts them as positives rather than negatives
(``loss.positives``, :mod:`tauray_trainers.losses._groups`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tauray_trainers.data.digits import DIGIT_WORDS

# Fields: {name} the class name, {a_name} with its indefinite article, {numeral} (digits only).
GENERIC_TEMPLATES: tuple[str, ...] = (
    "a photo of {a_name}.",
    "a blurry photo of {a_name}.",
    "a low resolution photo of the {name}.",
    "a close-up picture of {a_name}.",
    "a small image showing the {name}.",
    "{a_name} in the picture.",
    "a cropped photo of the {name}.",
    "{name}",
)

DIGIT_TEMPLATES: tuple[str, ...] = (
    "a photo of the digit {name}",
    "handwritten {numeral}",
    "the number {name}",
    "a handwritten digit {numeral}",
    "a drawing of the numeral {numeral}",
    "an image of {a_name}",
    "the digit {numeral} on a noisy background",
    "{numeral}",
)

_SOUNDS_LIKE_CONSONANT = ("one", "uni", "use", "eu")


def with_article(name: str) -> str:
    """``name`` with its indefinite article: "an airplane", "a truck", "a one"."""
    lowered = name.lower()
    vowel = lowered[:1] in "aeiou" and not lowered.startswith(_SOUNDS_LIKE_CONSONANT)
    return f"{'an' if vowel else 'a'} {name}"


def readable(name: str) -> str:
    """A folder or label name as words: ``"pickup_truck"`` -> ``"pickup truck"``."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def class_prompts(
    class_names: Sequence[str], templates: Sequence[str] = GENERIC_TEMPLATES
) -> tuple[tuple[str, ...], ...]:
    """Every template filled in with every class name.

    Args:
        class_names: one name per class (folder-style names are made readable).
        templates: ``str.format`` templates using ``{name}`` and ``{a_name}``.

    Returns:
        ``prompts[c][t]``: class ``c`` in template ``t``.

    Raises:
        ValueError: if there are no templates or a template uses another field.
    """
    if not templates:
        raise ValueError("templates must not be empty")
    prompts = []
    for raw in class_names:
        name = readable(str(raw))
        try:
            prompts.append(tuple(t.format(name=name, a_name=with_article(name)) for t in templates))
        except (KeyError, IndexError) as error:
            raise ValueError(
                f"caption template uses an unknown field {error}; allowed: {{name}}, {{a_name}}"
            ) from None
    return tuple(prompts)


def digit_prompts(templates: Sequence[str] = DIGIT_TEMPLATES) -> tuple[tuple[str, ...], ...]:
    """Captions of the ten digit classes, e.g. "a photo of the digit seven", "handwritten 7".

    Templates may use ``{name}`` ("seven"), ``{a_name}`` ("a seven") and ``{numeral}`` ("7").

    Raises:
        ValueError: if there are no templates or a template uses another field.
    """
    if not templates:
        raise ValueError("templates must not be empty")
    prompts = []
    for numeral, word in enumerate(DIGIT_WORDS):
        try:
            prompts.append(
                tuple(
                    t.format(name=word, a_name=with_article(word), numeral=numeral)
                    for t in templates
                )
            )
        except (KeyError, IndexError) as error:
            raise ValueError(
                f"caption template uses an unknown field {error}; "
                "allowed: {name}, {a_name}, {numeral}"
            ) from None
    return tuple(prompts)
