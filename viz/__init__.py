"""Draw feature maps: numpy tiling into mosaics, grayscale PNGs and matplotlib Figures.

Importing viz imports numpy only; matplotlib and Pillow load when a figure or PNG is made.

    import viz
    viz.save_grid(maps, "conv2d.png", layout="NHWC")    # one grid PNG (exporter preview)
    viz.write_figures(model, image, "figures/")          # every layer + comparison.png
"""
from .draw import select_layers, write_figures
from .figures import comparison_figure, grid_figure, save_grid, save_png, to_uint8
from .tiling import default_cols, grid_shape, normalize_maps, tile

__all__ = [
    "tile", "default_cols", "grid_shape", "normalize_maps",
    "grid_figure", "comparison_figure", "save_png", "save_grid", "to_uint8",
    "write_figures", "select_layers",
]
