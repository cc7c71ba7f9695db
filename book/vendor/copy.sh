#!/usr/bin/env bash
# Copy the JavaScript the book runs in the reader's browser into DEST, so that the built book loads
# nothing from a CDN and works offline:
#
#   DEST/mathjax/        MathJax 3: tex-mml-chtml.js (the file Sphinx loads by default, from a CDN),
#                        its CommonHTML fonts, and the components it loads lazily from its own
#                        folder: TeX extensions (autoload, \require), the accessibility tools and
#                        the speech rules that the right-click menu can switch on.
#   DEST/requirejs/      require.js, the module loader the widgets need.
#   DEST/html-manager/   @jupyter-widgets/html-manager's embed-amd.js, which draws the widgets from
#                        the state saved in the page, and the icon fonts it loads from its own folder.
#
# Versions are pinned in package-lock.json; node_modules/ stays in book/vendor and is not committed.
# Usage: bash book/vendor/copy.sh DEST      (the Makefile's `make vendor` passes book/_vendor)
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DEST" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
dest="$(cd "$1" && pwd)"

(cd "$here" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
nm="$here/node_modules"

# Start from an empty DEST so that files from an older version do not linger.
rm -rf "$dest/mathjax" "$dest/requirejs" "$dest/html-manager"

# MathJax computes its root from the URL of the script that loaded it, so the lazily loaded
# components and the fonts (output/chtml/fonts/woff-v2) must keep their paths relative to it.
mj="$nm/mathjax/es5"
mkdir -p "$dest/mathjax/output/chtml/fonts" "$dest/mathjax/input/tex" "$dest/mathjax/input/mml"
cp "$nm/mathjax/LICENSE" "$mj/tex-mml-chtml.js" "$dest/mathjax/"
cp -R "$mj/output/chtml/fonts/woff-v2" "$dest/mathjax/output/chtml/fonts/"
cp -R "$mj/input/tex/extensions" "$dest/mathjax/input/tex/"
cp -R "$mj/input/mml/extensions" "$dest/mathjax/input/mml/"
cp -R "$mj/a11y" "$mj/ui" "$mj/sre" "$dest/mathjax/"
# The grader's feedback pages are single files a student keeps offline: it inlines MathJax's
# all-in-one SVG build (no fonts or components to fetch) into each page (autograder/engine/grade.py).
cp "$mj/tex-svg-full.js" "$dest/mathjax/"

mkdir -p "$dest/requirejs"
cp "$nm/requirejs/require.js" "$dest/requirejs/"

# embed-amd.js is one webpack bundle (no chunks); it fetches only the fonts its CSS names, from
# the folder it was loaded from. Copy exactly those, and fail if one is missing.
hm="$nm/@jupyter-widgets/html-manager/dist"
mkdir -p "$dest/html-manager"
cp "$hm/embed-amd.js" "$dest/html-manager/"
fonts="$(grep -oE '"[0-9a-f]{20}\.(woff2|woff|ttf|eot|svg)"' "$hm/embed-amd.js" | tr -d '"' | sort -u)"
if [[ -z "$fonts" ]]; then
    echo "copy.sh: found no font files referenced by embed-amd.js; has its build changed?" >&2
    exit 1
fi
for f in $fonts; do
    cp "$hm/$f" "$dest/html-manager/"
done

echo "copy.sh: vendored $(find "$dest" -type f | wc -l) files ($(du -sh "$dest" | cut -f1)) into $dest"
