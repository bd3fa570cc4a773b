// The backend a network config names (Backend.Type).
import { type BackendConfig } from "../control/config";
import { type Backend, type BackendDeps } from "./backend";
import { HostGwBackend } from "./host-gw";
import { VxlanBackend } from "./vxlan";

export type { Backend, BackendDeps, BackendNode } from "./backend";

export function createBackend(config: BackendConfig, deps: BackendDeps): Backend {
  switch (config.type) {
    case "vxlan":
      return new VxlanBackend(config, deps);
    case "host-gw":
      return new HostGwBackend(config, deps);
  }
}
