# The NixOS module evaluated for real without nixpkgs (which cannot be
# fetched on the project's machines): nixpkgs' `lib` and comin's option
# declarations from ../shared/vendor, a stub `pkgs` with the functions the
# module uses, and the few NixOS options it reads or sets. tests/nix_module.rs
# evaluates the attributes below and builds `full.configured` in a throwaway
# store; `binary` is the hostenv-activate executable the package stands for.
{
  vendor ? ../../shared/vendor,
  binary,
}: let
  lib = import (vendor + "/nixpkgs-lib/lib");
  inherit (lib) mkOption types;
  cominOptions = vendor + "/comin/nix/module-options.nix";

  # A derivation built by /bin/sh from the host (no nixpkgs stdenv): enough
  # for a text file and a directory of links.
  build = name: script: extra:
    derivation ({
        inherit name;
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = ["-c" script];
        PATH = "/usr/bin:/bin";
      }
      // extra);

  pkgs = {
    # As nixpkgs' writeShellScriptBin: `$out/bin/NAME`, executable, the text
    # after a bash shebang, checked for syntax.
    writeShellScriptBin = name: text:
      build name ''
        mkdir -p "$out/bin"
        printf '#!/bin/bash\n%s' "$text" > "$out/bin/${name}"
        chmod +x "$out/bin/${name}"
        bash -n "$out/bin/${name}"
      '' {inherit text;}
      // {meta.mainProgram = name;};
    # As nixpkgs' symlinkJoin: every path's files linked into $out, then
    # postBuild.
    symlinkJoin = {
      name,
      paths,
      postBuild ? "",
    }:
      build name ''
        set -e
        mkdir -p "$out"
        for p in $paths; do cp -rs --no-preserve=mode "$p/." "$out/"; done
        ${postBuild}
      '' {inherit paths;};
    callPackage = _: _: throw "module-eval: the package is always given (services.hostenv-activate.package)";
  };

  # The program, as a package: the executable copied into the store.
  package =
    build "hostenv-activate-0.1.0" ''
      mkdir -p "$out/bin"
      cp "$src" "$out/bin/hostenv-activate"
    '' {src = binary;}
    // {meta.mainProgram = "hostenv-activate";};

  # The NixOS options the module reads or sets, as NixOS declares them.
  nixos = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [];
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [];
      };
      systemd.tmpfiles.rules = mkOption {
        type = types.listOf types.str;
        default = [];
      };
      networking.hostName = mkOption {
        type = types.str;
        default = "";
      };
      services.prometheus.exporters.node.extraFlags = mkOption {
        type = types.listOf types.str;
        default = [];
      };
    };
  };

  evalNode = {
    comin ? true,
    settings,
  }:
    (lib.evalModules {
      specialArgs = {inherit pkgs;};
      modules =
        [./module.nix nixos settings]
        ++ lib.optional comin cominOptions;
    })
    .config;

  failed = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # Every setting given, none at its default.
  fullSettings = {
    networking.hostName = "node-a";
    services.comin.enable = true;
    services.prometheus.exporters.node.extraFlags = ["--collector.textfile.directory=/var/lib/textfiles"];
    services.hostenv-activate = {
      enable = true;
      inherit package;
      nodeName = "node-a";
      apiBaseUrl = "https://provider.example";
      tokenFile = "/run/secrets/hostenv-token";
      actionTimeoutSeconds = 901;
      targetObserveTimeoutSeconds = 121;
      intentWaitSeconds = 31;
      runTimeoutSeconds = 3601;
      healthTimeoutSeconds = 61;
      stateDir = "/var/lib/hostenv-state";
      metrics.enable = true;
    };
  };
  # The full configuration with `change` applied to its own settings.
  with' = change: lib.recursiveUpdate fullSettings {services.hostenv-activate = change;};

  full = evalNode {settings = fullSettings;};

  # The lowest and highest integers a seconds option accepts, found through
  # its type's own check (a range around its default).
  range = opt: let
    ok = opt.type.check;
    # First accepted in (lo, hi], given lo refused and hi accepted.
    firstOk = lo: hi:
      if hi - lo <= 1
      then hi
      else let
        mid = lo + (hi - lo) / 2;
      in
        if ok mid
        then firstOk lo mid
        else firstOk mid hi;
    # Last accepted in [lo, hi), given lo accepted and hi refused.
    lastOk = lo: hi:
      if hi - lo <= 1
      then lo
      else let
        mid = lo + (hi - lo) / 2;
      in
        if ok mid
        then lastOk mid hi
        else lastOk lo mid;
    far = 4611686018427387904; # 2^62
  in {
    min = firstOk (0 - far) opt.default;
    max = lastOk opt.default far;
  };

  options =
    (lib.evalModules {
      specialArgs = {inherit pkgs;};
      modules = [./module.nix nixos cominOptions];
    })
    .options
    .services
    .hostenv-activate;
in {
  # What tests/nix_module.rs reads as JSON.
  report = {
    full = {
      failed = failed full;
      hook = full.services.comin.postDeploymentCommand;
      packages = map toString full.environment.systemPackages;
      tmpfiles = full.systemd.tmpfiles.rules;
    };
    # Each case's failed assertions.
    cases = lib.mapAttrs (_: settings: failed (evalNode {inherit settings;})) {
      noNodeName = with' {nodeName = null;};
      noApiBaseUrl = with' {apiBaseUrl = null;};
      noTokenFile = with' {tokenFile = null;};
      emptyNodeName = with' {nodeName = "";};
      tokenInStore = with' {tokenFile = "${builtins.storeDir}/00000000000000000000000000000000-token";};
      relativeStateDir = with' {stateDir = "var/state";};
      relativeMetrics = with' {metrics.directory = "textfiles";};
      cominDisabled = lib.recursiveUpdate fullSettings {services.comin.enable = false;};
    };
    noComin = failed (evalNode {
      comin = false;
      settings = builtins.removeAttrs fullSettings ["services"] // {services.hostenv-activate = fullSettings.services.hostenv-activate;};
    });
    # Every option whose type is a range of integers, with that range.
    bounds = lib.mapAttrs (_: range) (lib.filterAttrs (_: opt: lib.isOption opt && opt.type.name == "intBetween") options);
    defaults = lib.mapAttrs (_: opt: opt.default) (lib.filterAttrs (_: opt: lib.isOption opt && opt.type.name == "intBetween") options);
    # The state directory's default, for the check against the binary's.
    stateDirDefault = options.stateDir.default;
  };

  # Built, then run: the configured command on the system's PATH.
  configured = builtins.head full.environment.systemPackages;

  # A value the module refuses, forced: evaluation fails with its message.
  zeroTimeout = (evalNode {settings = with' {actionTimeoutSeconds = 0;};}).services.hostenv-activate.actionTimeoutSeconds;
}
