#!/bin/sh
# Init container: install the overlay CNI plugin on the host.
# The plugin is JavaScript, so it ships with the node binary and libbpf it
# runs with: /opt/cni/bin/overlay is a small wrapper around that bundle.
set -eu
CNI_BIN=${CNI_BIN:-/host/opt/cni/bin}
CNI_CONF=${CNI_CONF:-/host/etc/cni/net.d}
BUNDLE="$CNI_BIN/overlay.d"
mkdir -p "$BUNDLE/lib" "$CNI_CONF"
cp "$(command -v node)" "$BUNDLE/node"
cp -a /opt/overlayd/dist /opt/overlayd/node_modules /opt/overlayd/package.json "$BUNDLE/"
cp -L /usr/lib/*/libbpf.so.1 "$BUNDLE/lib/" 2>/dev/null || true
cat > "$CNI_BIN/overlay.tmp" <<'WRAP'
#!/bin/sh
d=$(dirname "$0")/overlay.d
LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$d/node" "$d/dist/agent/cni/main.js"
WRAP
chmod 755 "$CNI_BIN/overlay.tmp"
mv "$CNI_BIN/overlay.tmp" "$CNI_BIN/overlay"
cp /etc/overlayd/cni-conf.json "$CNI_CONF/10-overlay.conflist.tmp"
mv "$CNI_CONF/10-overlay.conflist.tmp" "$CNI_CONF/10-overlay.conflist"
echo "installed the overlay CNI plugin in $CNI_BIN and its config in $CNI_CONF"
