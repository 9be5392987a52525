"""Dataset export: the complete items (final image + captions) of a run, in the formats people train with.

``items``: what is complete and what was left out (and why); one module per format (``mycanvas``,
``customdiffusion``, ``imagefolder``, ``coco``, ``wds``), the dataset card and the HTML gallery.
"""
