"""Numbers and figures that a chapter's prose quotes, handed to the rendered book.

The book's pages never type a result: a cell computes it and *glues* it under a name
(myst-nb's ``glue``), and the Markdown quotes the name, formatted, with
``{glue:text}`name:.2f``` for a number or a ``{glue:figure}`` block for a figure with a
numbered caption. These two functions wrap ``myst_nb.glue`` for the chapters:

- values are converted to plain Python numbers first (``glue`` of a NumPy or PyTorch
  scalar stores a representation such as ``np.float64(0.5)`` that the ``:.2f`` format
  of ``{glue:text}`` cannot parse);
- where myst-nb is not installed (a notebook opened on Colab or Binder) numbers are
  simply not glued, and a figure is shown in place instead of being held back for its
  caption, so the reader still sees it.
"""

from __future__ import annotations

from numbers import Number
from typing import Any

__all__ = ["glue_figure", "glue_values", "plain"]


def plain(value: Any) -> int | float | str | bool:
    """``value`` as a plain Python ``int``, ``float``, ``bool`` or ``str``.

    Accepts Python numbers and strings, NumPy scalars and one-element arrays, and
    one-element PyTorch tensors (anything with ``.item()``).

    Raises:
        TypeError: for anything else (a list, a many-element array), naming its type:
            glue one number per name.
    """
    if isinstance(value, bool | str):
        return value
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as error:
            raise TypeError(
                f"cannot glue a {type(value).__name__} of more than one element; "
                "glue one number per name"
            ) from error
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Number):
        return float(value)  # type: ignore[arg-type]
    raise TypeError(
        f"cannot glue a {type(value).__name__}: glue a number or a string per name"
    )


def glue_values(**values: Any) -> None:
    """Glue each keyword's value under its name for the page's prose; show nothing.

    Args:
        **values: name = number (Python, NumPy or one-element tensor) or string. The
            Markdown then quotes ``{glue:text}`name:.3f``` (any format spec that the
            value's type accepts).

    Raises:
        TypeError: for a value that is not one number or string (see :func:`plain`).
    """
    converted = {name: plain(value) for name, value in values.items()}
    glue = _glue()
    if glue is None:
        return
    for name, value in converted.items():
        glue(name, value, display=False)


def glue_figure(name: str, figure: Any) -> None:
    """Glue a matplotlib figure for a ``{glue:figure}`` block with a numbered caption.

    The figure is closed afterwards, so that the notebook does not show it a second
    time where it was drawn; the Markdown places it::

        ```{glue:figure} fig-damage
        :name: fig-damage

        Damage against the number of transitions.
        ```

    and the prose refers to it with ``{numref}`fig-damage```. Without myst-nb (Colab)
    the figure is shown where it was drawn instead.
    """
    glue = _glue()
    if glue is None:
        from IPython.display import display

        display(figure)
    else:
        glue(name, figure, display=False)
    import matplotlib.pyplot as plt

    plt.close(figure)


def _glue() -> Any:
    try:
        from myst_nb import glue
    except ImportError:
        return None
    return glue
