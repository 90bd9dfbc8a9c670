"""Whiteboard diagrams of the papers' ideas, drawn with matplotlib for the chapters.

One module per diagram; each exposes a ``draw_*`` function that returns a figure sized
for the book's text column (:data:`companion.style.MAX_FIGURE_WIDTH`).
"""
