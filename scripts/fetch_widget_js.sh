#!/usr/bin/env bash
# Fetch the JavaScript that the built site needs to work offline:
#   - @jupyter-widgets/html-manager (dist/embed-amd.js) and requirejs (require.js),
#     which render the ipywidgets whose state the book build embeds;
#   - MathJax 3 (tex-mml-chtml.js and its fonts/extensions), which typesets the math.
# They come from the npm registry (`npm pack`), land in the git-ignored folder
# _widgets_js/ and are picked up by the Sphinx extension book/_ext/kmex_assets.py.
# Without npm the book still builds and loads these scripts from their CDNs.
#
# Usage: scripts/fetch_widget_js.sh [--force]
set -euo pipefail

HTML_MANAGER_VERSION="1.0.15"   # @jupyter-widgets/html-manager 1.x <-> ipywidgets 8
REQUIREJS_VERSION="2.3.8"
MATHJAX_VERSION="3.2.2"          # Sphinx 7 uses MathJax 3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/_widgets_js"
STAMP="$DEST/VERSIONS"
WANT="html-manager=$HTML_MANAGER_VERSION requirejs=$REQUIREJS_VERSION mathjax=$MATHJAX_VERSION"

if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "fetch_widget_js: _widgets_js/ is up to date ($WANT)"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "fetch_widget_js: npm not found; the book will load the widget renderer and MathJax from their CDNs (needs internet to view widgets and math)."
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(
    cd "$WORK"
    npm pack --silent "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" \
        "requirejs@$REQUIREJS_VERSION" "mathjax@$MATHJAX_VERSION" >/dev/null
    for tgz in *.tgz; do
        mkdir -p "${tgz%.tgz}"
        tar xzf "$tgz" -C "${tgz%.tgz}"
    done
)

NEW="$DEST.new"
rm -rf "$NEW"
mkdir -p "$NEW/mathjax/es5/output"
cp "$WORK/jupyter-widgets-html-manager-$HTML_MANAGER_VERSION/package/dist/embed-amd.js" "$NEW/embed-amd.js"
cp "$WORK/requirejs-$REQUIREJS_VERSION/package/require.js" "$NEW/require.js"
MJ="$WORK/mathjax-$MATHJAX_VERSION/package/es5"
cp "$MJ/tex-mml-chtml.js" "$NEW/mathjax/es5/"
cp -r "$MJ/input" "$MJ/ui" "$MJ/a11y" "$MJ/adaptors" "$NEW/mathjax/es5/"
cp -r "$MJ/output/chtml" "$NEW/mathjax/es5/output/"
echo "$WANT" > "$NEW/VERSIONS"
rm -rf "$DEST"
mv "$NEW" "$DEST"
echo "fetch_widget_js: wrote $DEST ($WANT, $(du -sh "$DEST" | cut -f1))"
