/* Photos on the phone (照片): compressed in the page to a JPEG of at most 500 KB before they are queued, so a
   stairwell's one bar of signal carries them. Used by the report form (上报照片) and the case page (处置照片). */
(function (root) {
  "use strict";
  var GA = root.GA || (root.GA = {});
  var MAX_BYTES = 500 * 1024, MAX_SIDE = 1600;

  function loadImage(file) {
    return new Promise(function (resolve, reject) {
      var url = URL.createObjectURL(file), img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error("not an image")); };
      img.src = url;
    });
  }
  function toBlob(canvas, quality) {
    return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", quality); });
  }
  /* A JPEG of at most MAX_BYTES: scaled to MAX_SIDE, then lower quality, then smaller, until it fits. */
  GA.compressPhoto = function (file) {
    return loadImage(file).then(function (img) {
      var scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
      function attempt(scale, quality) {
        var c = document.createElement("canvas");
        c.width = Math.max(1, Math.round(img.naturalWidth * scale));
        c.height = Math.max(1, Math.round(img.naturalHeight * scale));
        c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
        return toBlob(c, quality).then(function (blob) {
          if (blob.size <= MAX_BYTES) return blob;
          if (quality > 0.45) return attempt(scale, quality - 0.15);
          return attempt(scale * 0.75, 0.7);
        });
      }
      return attempt(scale, 0.82).then(function (blob) { URL.revokeObjectURL(img.src); return blob; });
    });
  };

})(typeof self !== "undefined" ? self : this);
