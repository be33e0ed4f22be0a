// kube-testcp: one static binary that is a small, real Kubernetes control plane for
// end-to-end tests: embedded etcd, kube-apiserver, kube-controller-manager (garbage
// collector, namespace and service-account controllers) and kubectl, all built from the
// k8s.io/kubernetes Go module. There is no kubelet or scheduler: pods never run.
//
//	kube-testcp up --dir DIR [--port 16443] [--etcd-port 12379]
//	kube-testcp kubectl ...                  # or a symlink named kubectl
//	kube-testcp kube-apiserver ...           # or a symlink named kube-apiserver
//	kube-testcp kube-controller-manager ...  # or a symlink named kube-controller-manager
//	kube-testcp etcd ...                     # or a symlink named etcd
//
// `up` writes DIR/kubeconfig (token auth, user "admin" in system:masters), serves
// https://127.0.0.1:PORT until SIGTERM/SIGINT, and runs the controller manager as a
// child process that the kernel kills when `up` dies, so no process outlives it.
//
// Adapted from shared/testbed/kube/kube-testcp (which ran no controller manager).
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

const token = "kube-testcp-admin-token" // loopback-only test credential

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "kube-testcp" || name == "main" {
		if len(args) < 1 {
			fmt.Fprintln(os.Stderr, "usage: kube-testcp up|etcd|kube-apiserver|kube-controller-manager|kubectl [flags]")
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	switch name {
	case "up":
		os.Exit(up(args))
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		os.Exit(runCobra(apiserver.NewAPIServerCommand(), args))
	case "kube-controller-manager":
		os.Exit(runCobra(controllermanager.NewControllerManagerCommand(), args))
	case "kubectl":
		os.Args = append([]string{"kubectl"}, args...)
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown subcommand", name)
		os.Exit(2)
	}
}

func runCobra(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

func up(args []string) int {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (etcd data, certs, kubeconfig)")
	port := fs.Int("port", 6443, "kube-apiserver secure port on 127.0.0.1")
	etcdPort := fs.Int("etcd-port", 2379, "etcd client port on 127.0.0.1 (peer port = this+1)")
	_ = fs.Parse(args)
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "--dir is required")
		return 2
	}
	certs := filepath.Join(*dir, "certs")
	must(os.MkdirAll(certs, 0o700))

	// 1. embedded etcd on loopback
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(*dir, "etcd")
	cfg.LogLevel = "error"
	// The scale benchmark writes a few GB of revisions at 100,000 users; the default quota (2 GiB) would stop
	// etcd, and with it the API server, half-way.
	cfg.QuotaBackendBytes = 8 << 30
	cu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(*etcdPort))
	pu, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(*etcdPort+1))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	must(err)
	defer e.Close()
	<-e.Server.ReadyNotify()

	// 2. service-account signing key + static token file
	saKey := filepath.Join(certs, "sa.key")
	saPub := filepath.Join(certs, "sa.pub")
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	must(err)
	must(os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600))
	must(os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644))
	tokens := filepath.Join(*dir, "tokens.csv")
	must(os.WriteFile(tokens, []byte(token+",admin,admin-uid,system:masters\n"), 0o600))

	// 3. kubeconfig (the serving cert is self-signed by kube-apiserver into --cert-dir)
	p := strconv.Itoa(*port)
	kubeconfig := filepath.Join(*dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: testcp
  cluster:
    server: https://127.0.0.1:%s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: testcp
  context: {cluster: testcp, user: admin, namespace: default}
current-context: testcp
`, p, filepath.Join(certs, "apiserver.crt"), token)
	must(os.WriteFile(kubeconfig, []byte(kc), 0o600))

	// 4. kube-controller-manager as a child, once the API server has written its serving certificate (the
	// kubeconfig names it). Pdeathsig ends the child with us; it is tied to the spawning OS thread, so that
	// goroutine locks its thread and lives as long as the child. A child that dies is restarted.
	self, err := os.Executable()
	must(err)
	cmLog, err := os.Create(filepath.Join(*dir, "controller-manager.log"))
	must(err)
	go func() {
		runtime.LockOSThread()
		for {
			for {
				if _, err := os.Stat(filepath.Join(certs, "apiserver.crt")); err == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			cm := exec.Command(self, "kube-controller-manager",
				"--kubeconfig="+kubeconfig,
				"--leader-elect=false",
				"--secure-port=0",
				"--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token",
				"--service-account-private-key-file="+saKey,
				"--root-ca-file="+filepath.Join(certs, "apiserver.crt"),
				"--concurrent-gc-syncs=5",
			)
			cm.Stdout, cm.Stderr = cmLog, cmLog
			cm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cm.Start(); err != nil {
				fmt.Fprintln(cmLog, "kube-testcp: cannot start the controller manager:", err)
			} else {
				_ = cm.Wait()
				fmt.Fprintln(cmLog, "kube-testcp: controller manager exited; restarting")
			}
			time.Sleep(time.Second)
		}
	}()

	// 5. kube-apiserver in-process, flags as controller-runtime envtest uses
	cmd := apiserver.NewAPIServerCommand() // installs its own SIGTERM/SIGINT handling
	return runCobra(cmd, []string{
		"--etcd-servers=" + cu.String(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + p,
		"--cert-dir=" + certs,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--disable-admission-plugins=ServiceAccount",
		"--authorization-mode=RBAC",
		"--token-auth-file=" + tokens,
		"--service-account-issuer=https://127.0.0.1:" + p + "/",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--endpoint-reconciler-type=none",
	})
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-testcp:", err)
		os.Exit(1)
	}
}
