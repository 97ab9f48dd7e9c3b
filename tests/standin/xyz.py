"""The X/Y/Z plot's processing loop as the host's script runs it: each cell is a copy of p with
one field changed, processed whole; the cell keeps its first image and infotext, and the grid's
infotext is made from the first cell's p after it ran."""

from copy import copy

from modules import processing, scripts


class XYZPlot(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def run(self, p, field, values):
        cells, infotexts, grid_info = [], [], None
        for value in values:
            pc = copy(p)
            setattr(pc, field, value)
            res = processing.process_images(pc)
            cells.append(res.images[0])
            infotexts.append(res.infotexts[0])
            if grid_info is None:
                pc.extra_generation_params = copy(pc.extra_generation_params)
                pc.extra_generation_params["Script"] = self.title()
                grid_info = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, [])
        grid = processing.Image.new("RGB", (sum(c.width for c in cells), max(c.height for c in cells)))
        x = 0
        for cell in cells:
            grid.paste(cell, (x, 0))
            x += cell.width
        processed = processing.Processed(p, [grid, *cells], [grid_info, *infotexts], 1)
        return processed
