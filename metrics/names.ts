// Every metric name in one place: overlay_ prefix, snake_case, _total on
// counters, units in names.
export const M = {
  packets: "overlay_packets_total",
  bytes: "overlay_bytes_total",
  drops: "overlay_drops_total",
  dropBytes: "overlay_drop_bytes_total",
  peerTxPackets: "overlay_peer_tx_packets_total",
  peerTxBytes: "overlay_peer_tx_bytes_total",
  peerRxPackets: "overlay_peer_rx_packets_total",
  peerRxBytes: "overlay_peer_rx_bytes_total",
  mapEntries: "overlay_map_entries",
  mapSyncDuration: "overlay_map_sync_duration_seconds",
  mapSyncErrors: "overlay_map_sync_errors_total",
  leaseRenewals: "overlay_lease_renewals_total",
  leaseAcquisitions: "overlay_lease_acquisitions_total",
  watchRestarts: "overlay_etcd_watch_restarts_total",
  configErrors: "overlay_config_errors_total",
  ready: "overlay_ready",
  buildInfo: "overlay_build_info",
  datapathInfo: "overlay_datapath_info",
  routeOverlap: "overlay_route_overlap",
  eventsSuppressed: "overlay_monitor_events_suppressed_total",
} as const;
