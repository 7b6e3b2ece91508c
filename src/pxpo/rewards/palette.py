"""The named colours a colour target can name (``target: blue``), chosen far apart in RGB so that a
pixel's nearest palette colour is unambiguous. The shapes world draws with the same palette."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 40, 180),
    "cyan": (40, 210, 220),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
