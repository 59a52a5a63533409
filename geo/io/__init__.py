"""Import and export of real boundary data (导入导出): formats, coordinate systems, validation report.

`import_layer` reads GeoJSON, GeoPackage, zipped Shapefile, CSV or XLSX into one layer in one transaction;
`export_layer` writes any layer, at the current or a dated boundary version, to GeoJSON, GeoPackage, zipped
Shapefile or CSV.

- `readers`: reading a file of any supported format (`read_source`, `ReadError`);
- `fields`: the layers and their fields, column matching and value conversion (`layer_spec`, `MappingError`);
- `codes`: code schemes as data (data/code_schemes: lengths per level, parent prefixes; `load_scheme`);
- `reproject`: the file's coordinate system to EPSG:4326, plausibility checks (`CoordinateError`);
- `validate`: the geometry and database checks (lossless repair with areas before and after) and the report's
  `Issue`s;
- `overlaps`: a proposed owner for every overlap between siblings (named, else the longer shared edge), applied
  all or nothing (`OverlapNotResolvable`);
- `importer`: the import in one transaction (`import_layer`, `ImportReport`, `ImportRefused`, `ImportFailed`); the
  file's unmapped columns kept per boundary as attributes; the start date defaulted to cover earlier incidents;
- `exporter`: the export (`export_layer`, `read_layer`, `ExportError`), kept attributes as columns again.

Every refusal is a `geo.errors.DomainError` carrying its problem slug (the API answers it as problem+json).
"""

from geo.io.exporter import EXPORT_FORMATS, export_layer, read_layer
from geo.io.fields import LAYERS, MappingError, layer_spec
from geo.io.importer import ImportFailed, ImportOptions, ImportRefused, ImportReport, import_layer
from geo.io.readers import ReadError
from geo.io.reproject import CoordinateError

__all__ = [
    "EXPORT_FORMATS", "LAYERS", "CoordinateError", "ImportFailed", "ImportOptions", "ImportRefused", "ImportReport",
    "MappingError", "ReadError", "export_layer", "import_layer", "layer_spec", "read_layer",
]
