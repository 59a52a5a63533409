"""District-wide batch jobs on Dask (分布式批处理): the same answers as the in-process paths, spread over the workers
of a `dask.distributed` cluster.

- `cluster`: `dask_client` (a small `LocalCluster` by default; ``GRIDATLAS_DASK_SCHEDULER`` names a real
  scheduler), `run_ordered` (submit, show progress, gather in order);
- `locate`: `locate_points` / `locate_csv` (a large point file, partitioned; the boundaries are broadcast to the
  workers once and each worker builds its `geo.locate.index.LocateIndex` once per job), `locate_frame_in_process`
  (the reference answer);
- `attribute`: `attribute_incidents_dask` (incidents split by the boundary interval in force at their report time
  and by chunk), `apply_attribution` (write the owners back);
- `classify`: `classify_compounds_dask` (compounds in chunks against the level's units broadcast to the workers;
  the per-compound measures are combined and classified on the driver by `geo.classify`'s own rule);
- `heat`: `heat_counts_dask` (incidents per hexagon cell and local month over years, one task per range of months;
  binned by `geo.incidents.hexagons`, the heatmap's and the rollup's lattice, so the counts are theirs).

Every job reads the database on the driver only (through the caller's connection, so it sees the caller's
transaction); workers receive data and compute, so a remote cluster needs no database credentials.
"""
