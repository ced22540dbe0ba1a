# `nix flake check`: build, clippy, rustfmt, Nix formatting, the NixOS
# module's evaluation, and the hermetic harness against the packaged binaries.
# None of these can run on the project's own machines (nixpkgs cannot be
# fetched there); `.ci/nix-checks` runs the parse and formatting part, and
# evaluates the module with the vendored lib and comin options (tests/nix_module.rs).
{
  lib,
  pkgs,
  nixosSystem,
  package,
  staticPackage,
  module,
}: let
  # A derivation that reuses the package's source, vendored dependencies and
  # cargo setup, but runs `script` instead of building and installing.
  cargoCheck = name: extraInputs: script:
    package.overrideAttrs (old: {
      pname = "hostenv-activate-${name}";
      nativeBuildInputs = old.nativeBuildInputs ++ extraInputs;
      dontCargoBuild = true;
      buildPhase = script;
      doCheck = false;
      dontCargoInstall = true;
      installPhase = "touch $out";
    });

  # comin is not an input of this flake; these two options are all the
  # module touches, so a stub stands in for comin's module when evaluating.
  cominStub = {
    options.services.comin = {
      enable = lib.mkEnableOption "comin (stub)";
      postDeploymentCommand = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
      };
    };
  };
  evalNode = settings:
    nixosSystem {
      inherit (pkgs.stdenv.hostPlatform) system;
      modules = [
        module
        cominStub
        {
          boot.isContainer = true;
          system.stateVersion = lib.trivial.release;
          services.hostenv-activate.package = package;
        }
        settings
      ];
    };
  failedAssertions = node:
    map (a: a.message) (lib.filter (a: !a.assertion) node.config.assertions);

  good = evalNode {
    services.comin.enable = true;
    services.hostenv-activate = {
      enable = true;
      nodeName = "node-a";
      apiBaseUrl = "https://provider.example";
      tokenFile = "/run/secrets/hostenv-token";
    };
  };
  # What `good` left to the module's defaults (tests/nix_module.rs checks
  # those against the binary's), for the hook's check below.
  goodSettings = good.config.services.hostenv-activate;
  withMetrics = evalNode {
    services.comin.enable = true;
    services.prometheus.exporters.node.extraFlags = ["--collector.textfile.directory=/var/lib/textfiles"];
    services.hostenv-activate = {
      enable = true;
      nodeName = "node-a";
      apiBaseUrl = "https://provider.example";
      tokenFile = "/run/secrets/hostenv-token";
      metrics.enable = true;
    };
  };
  bad = evalNode {
    services.hostenv-activate = {
      enable = true;
      tokenFile = "${builtins.storeDir}/0000-token";
      stateDir = "relative/state";
    };
  };
  # A timeout outside the binary's range is a type error at evaluation.
  outOfRange = let
    node = evalNode {
      services.comin.enable = true;
      services.hostenv-activate = {
        enable = true;
        nodeName = "node-a";
        apiBaseUrl = "https://provider.example";
        tokenFile = "/run/secrets/hostenv-token";
        actionTimeoutSeconds = 604801;
      };
    };
  in
    builtins.tryEval node.config.services.hostenv-activate.actionTimeoutSeconds;
in {
  build = package;

  clippy = cargoCheck "clippy" [pkgs.clippy] ''
    cargo clippy --all-targets --offline -- -D warnings
  '';

  fmt = pkgs.runCommand "hostenv-activate-fmt" {nativeBuildInputs = [pkgs.cargo pkgs.rustfmt];} ''
    export HOME=$TMPDIR
    cd ${package.src}
    cargo fmt --all -- --check
    touch $out
  '';

  nix-fmt = pkgs.runCommand "hostenv-activate-nix-fmt" {nativeBuildInputs = [pkgs.alejandra];} ''
    alejandra --check ${lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
    }}
    touch $out
  '';

  # The module: a complete configuration raises no assertion and points
  # comin at a hook exporting the configuration; an incomplete one raises
  # one message per problem. The values left to their defaults are read
  # from the module, not repeated here.
  module = assert failedAssertions good == [];
  assert failedAssertions withMetrics == [];
  assert lib.length (failedAssertions bad) == 5;
  assert !outOfRange.success;
    pkgs.runCommand "hostenv-activate-module" {} ''
      hook=${good.config.services.comin.postDeploymentCommand}
      grep -qE "^export HOSTENV_COMIN_NODE_NAME='?node-a'?$" $hook
      grep -qE "^export HOSTENV_COMIN_ACTION_TIMEOUT='?${toString goodSettings.actionTimeoutSeconds}'?$" $hook
      grep -qE "^export HOSTENV_COMIN_RUN_TIMEOUT='?${toString goodSettings.runTimeoutSeconds}'?$" $hook
      grep -qE "^export HOSTENV_COMIN_STATE_DIR='?${goodSettings.stateDir}'?$" $hook
      grep -q "exec ${lib.getExe package}" $hook
      ! grep -q HOSTENV_COMIN_METRICS_FILE $hook
      # With metrics on, the file goes where node_exporter's textfile
      # collector reads.
      grep -qE "^export HOSTENV_COMIN_METRICS_FILE='?/var/lib/textfiles/hostenv-activate.prom'?$" \
        ${withMetrics.config.services.comin.postDeploymentCommand}
      touch $out
    '';

  # The hermetic harness, run against the binaries that ship rather than one
  # built beside the tests. The crate's integration tests (fake provider on
  # loopback, stub user programs; no network, no root) find the binary under
  # test through CARGO_BIN_EXE_hostenv-activate at run time (assert_cmd's
  # `Command::cargo_bin`). `cargo test` would set that variable to its own
  # build, so the test executables are run directly, once per shipped
  # binary; the binary cargo built is deleted so that no test can fall back
  # to it unnoticed.
  harness = cargoCheck "harness" [pkgs.jq] ''
    cargo test --offline --no-run --message-format=json-render-diagnostics \
        ${lib.concatMapStringsSep " " (name: "--test=${name}") package.hermeticTests} \
      | jq -r 'select(.reason == "compiler-artifact" and .profile.test) | .executable' \
      > test-executables
    find target -type f -name hostenv-activate -delete
    for bin in ${lib.getExe package} ${lib.getExe staticPackage}; do
      echo "== hermetic harness against $bin"
      for tests in $(cat test-executables); do
        env "CARGO_BIN_EXE_hostenv-activate=$bin" "$tests" </dev/null
      done
    done
  '';
}
