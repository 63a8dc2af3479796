"""Server-rendered SVG sparklines: no chart library, nothing to load."""

from django.utils.html import format_html


def sparkline(points, width: int = 180, height: int = 36, unit: str = "") -> str:
    """points: (at, value) pairs, oldest first."""
    values = [float(v) for _at, v in points]
    if len(values) < 2:
        return format_html('<svg class="spark" width="{}" height="{}" role="img" aria-label="not enough data yet"></svg>', width, height)
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    coords = " ".join(f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}" for i, v in enumerate(values))
    label = f"last {values[-1]:,.2f}{unit}, min {low:,.2f}{unit}, max {high:,.2f}{unit}"
    return format_html(
        '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}">'
        "<title>{}</title><polyline points=\"{}\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\"/></svg>",
        width, height, width, height, label, label, coords,
    )
