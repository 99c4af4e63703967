// CoreDNS with only the plugins the real node's Corefile uses (devkit/realnode/node.py):
// upstream's main imports every plugin, and with them every cloud SDK, 1,330 packages to
// compile; these need about half.
package main

import (
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
