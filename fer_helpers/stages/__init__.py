"""One module per notebook: each holds that notebook's cached stage (``build``/``prepare``, which builds the
stages it reads first) and the readers of what it wrote into the run folder, and nothing else; the work itself
is done by the domain modules below (data, degrade, quality, restore, classify, scoring).

=================  ===================  =================================================
notebook           stage module         writes into the run folder
=================  ===================  =================================================
01_degradation     data, degradation    data/, degraded/, degradation/
02_quality_check   quality              quality/
03_restoration     restoration          restored/, restoration/ (models/ when it trains)
04_vit, 05_base..  classification       classification/
06_visualization   findings             statistics/ (reads all of the above)
=================  ===================  =================================================
"""
