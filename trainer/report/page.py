"""The report page: its HTML parts in order, the PNGs they link to, and the figures they are drawn on."""
import html

PNG_DIR = "report"
FIGSIZE = (8, 3.6)


class Page:
    """HTML parts in order, and the PNGs they link to."""

    def __init__(self, png_dir):
        self.png_dir = png_dir
        self.parts = []

    def heading(self, text):
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text, css_class=""):
        self.parts.append(f'<p class="{css_class}">{html.escape(text)}</p>')

    def table(self, header, rows, name):
        cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f'<table id="{name}"><tr>{cells}</tr>{body}</table>')

    def figure(self, fig, name, caption):
        fig.savefig(self.png_dir / f"{name}.png", dpi=96, bbox_inches="tight")
        self._image(name, caption)

    def picture(self, image, name, caption):
        image.save(self.png_dir / f"{name}.png")
        self._image(name, caption)

    def _image(self, name, caption):
        self.parts.append(f'<figure><img src="{PNG_DIR}/{name}.png" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def html(self, title):
        style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}"
                 "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
                 "text-align:left}th{background:#eee}img{max-width:100%}figure{margin:1em 0}"
                 ".missing{color:#a60}.warning{color:#b00;font-weight:bold}")
        return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(self.parts)
                + "\n</body></html>\n")


def cell(value):
    """A table cell's text: floats to 3 decimals, None as n/a."""
    if isinstance(value, float):
        return f"{value:.3f}"
    return "n/a" if value is None else str(value)


def new_figure():
    """(figure, axes) of the report's size, drawn off screen."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed (Agg)

    fig = Figure(figsize=FIGSIZE)
    return fig, fig.subplots()
