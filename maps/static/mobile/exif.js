/* Where and when a photo was taken (照片的拍摄位置和时间), read from its EXIF block before the page compresses it
   (the canvas drops EXIF). Only the JPEG APP1 "Exif" segment is read: DateTimeOriginal (+ OffsetTimeOriginal) and
   the GPS latitude/longitude (WGS-84, as phone cameras write them). Anything malformed or missing gives null
   fields, never an error. GA.readExif(file) resolves {taken_at: "YYYY-MM-DDTHH:MM:SS+08:00" | null,
   lon: number | null, lat: number | null}. */
(function (root) {
  "use strict";
  var GA = root.GA || (root.GA = {});
  var HEAD_BYTES = 256 * 1024;  // EXIF lives in the first 64 KB (APP1's limit); thumbnails may precede the GPS IFD
  var SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8};

  function parseTiff(view, t) {
    var little = view.getUint16(t) === 0x4949;
    function u16(o) { return view.getUint16(t + o, little); }
    function u32(o) { return view.getUint32(t + o, little); }
    if (u16(2) !== 42) return null;
    function ifd(off) {
      var out = {}, n = u16(off);
      for (var i = 0; i < n; i++) {
        var e = off + 2 + i * 12, tag = u16(e), type = u16(e + 2), count = u32(e + 4);
        var size = (SIZES[type] || 1) * count, at = size <= 4 ? e + 8 : u32(e + 8);
        if (t + at + size > view.byteLength) continue;
        if (type === 2) {
          var s = "";
          for (var k = 0; k < count; k++) { var c = view.getUint8(t + at + k); if (!c) break; s += String.fromCharCode(c); }
          out[tag] = s;
        } else if (type === 5 || type === 10) {
          var vals = [];
          for (var r = 0; r < count; r++) {
            var num = type === 5 ? u32(at + r * 8) : view.getInt32(t + at + r * 8, little);
            var den = type === 5 ? u32(at + r * 8 + 4) : view.getInt32(t + at + r * 8 + 4, little);
            vals.push(den ? num / den : NaN);
          }
          out[tag] = vals;
        } else if (type === 3) out[tag] = u16(at);
        else if (type === 4) out[tag] = u32(at);
      }
      return out;
    }
    var ifd0 = ifd(u32(4)), exif = ifd0[0x8769] ? ifd(ifd0[0x8769]) : {}, gps = ifd0[0x8825] ? ifd(ifd0[0x8825]) : {};
    return {ifd0: ifd0, exif: exif, gps: gps};
  }

  function degrees(v, ref) {
    if (!v || v.length < 3 || v.some(isNaN)) return null;
    var d = v[0] + v[1] / 60 + v[2] / 3600;
    return ref === "S" || ref === "W" ? -d : d;
  }

  function when(stamp, offset) {
    var m = /^(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})/.exec(stamp || "");
    if (!m || m[1] === "0000") return null;
    if (offset && /^[+-]\d{2}:\d{2}$/.test(offset)) {
      return m[1] + "-" + m[2] + "-" + m[3] + "T" + m[4] + ":" + m[5] + ":" + m[6] + offset;
    }
    // no offset recorded: the camera's clock is the phone's, so the phone's time zone on that day
    var d = new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
    return isNaN(d.getTime()) ? null : GA.localIso(d);
  }

  GA.parseExif = function (buffer) {
    var none = {taken_at: null, lon: null, lat: null};
    try {
      var view = new DataView(buffer);
      if (view.byteLength < 4 || view.getUint16(0) !== 0xFFD8) return none;
      var off = 2;
      while (off + 4 <= view.byteLength) {
        var marker = view.getUint16(off), size = view.getUint16(off + 2);
        if ((marker & 0xFF00) !== 0xFF00 || marker === 0xFFDA) break;
        if (marker === 0xFFE1 && view.getUint32(off + 4) === 0x45786966 && view.getUint16(off + 8) === 0) {
          var tags = parseTiff(view, off + 10);
          if (!tags) return none;
          var lat = degrees(tags.gps[2], tags.gps[1]), lon = degrees(tags.gps[4], tags.gps[3]);
          var ok = lat !== null && lon !== null && Math.abs(lat) <= 90 && Math.abs(lon) <= 180 && (lat || lon);
          return {taken_at: when(tags.exif[0x9003] || tags.ifd0[0x0132], tags.exif[0x9011]),
                  lon: ok ? lon : null, lat: ok ? lat : null};
        }
        off += 2 + size;
      }
    } catch (e) { /* a truncated or odd file: no EXIF */ }
    return none;
  };

  GA.readExif = function (file) {
    var head = file.slice(0, HEAD_BYTES);
    var read = head.arrayBuffer ? head.arrayBuffer() : new Promise(function (resolve, reject) {
      var fr = new FileReader(); fr.onload = function () { resolve(fr.result); }; fr.onerror = reject; fr.readAsArrayBuffer(head);
    });
    return read.then(GA.parseExif, function () { return {taken_at: null, lon: null, lat: null}; });
  };
})(typeof self !== "undefined" ? self : this);
