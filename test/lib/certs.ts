// Certificates made with openssl for a TLS etcd: a CA, a server certificate
// for the given IPs, a client certificate, and a second, unrelated CA.
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { sh } from "./sh";
import { type TlsFiles } from "./etcd";

export interface Certs extends TlsFiles {
  dir: string;
  otherCa: string;
}

function ca(dir: string, name: string): void {
  sh([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-keyout",
    join(dir, `${name}.key`),
    "-out",
    join(dir, `${name}.pem`),
  ]);
}

function leaf(dir: string, name: string, caName: string, ext: string): void {
  sh([
    "openssl",
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    `/CN=${name}`,
    "-keyout",
    join(dir, `${name}.key`),
    "-out",
    join(dir, `${name}.csr`),
  ]);
  sh(["sh", "-c", `printf '%s\\n' '${ext}' > ${join(dir, `${name}.ext`)}`]);
  sh([
    "openssl",
    "x509",
    "-req",
    "-in",
    join(dir, `${name}.csr`),
    "-CA",
    join(dir, `${caName}.pem`),
    "-CAkey",
    join(dir, `${caName}.key`),
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    join(dir, `${name}.ext`),
    "-out",
    join(dir, `${name}.pem`),
  ]);
}

export function makeCerts(ips: string[]): Certs {
  const dir = mkdtempSync("/tmp/overlayd-certs-");
  ca(dir, "ca");
  ca(dir, "other-ca");
  leaf(
    dir,
    "server",
    "ca",
    `subjectAltName=${ips.map((ip) => `IP:${ip}`).join(",")}\nextendedKeyUsage=serverAuth,clientAuth`,
  );
  leaf(dir, "client", "ca", "extendedKeyUsage=clientAuth");
  return {
    dir,
    ca: join(dir, "ca.pem"),
    otherCa: join(dir, "other-ca.pem"),
    serverCert: join(dir, "server.pem"),
    serverKey: join(dir, "server.key"),
    clientCert: join(dir, "client.pem"),
    clientKey: join(dir, "client.key"),
  };
}
