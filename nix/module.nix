# services.hostenv-activate: run hostenv-activate as comin's
# postDeploymentCommand, and give operators the same command, configured,
# for `hostenv-activate --dry-run`. Needs comin's own NixOS module.
{
  config,
  options,
  lib,
  pkgs,
  ...
}: let
  cfg = config.services.hostenv-activate;
  inherit (lib) mkOption types;

  hasComin = options ? services.comin.postDeploymentCommand;

  # Where node_exporter's textfile collector reads `*.prom` files, when its
  # flags say (`--collector.textfile.directory=DIR`, `... DIR` in one item,
  # or DIR as the next item); NixOS has no option of its own for it.
  textfileOption = "--collector.textfile.directory";
  nodeExporterFlags = lib.attrByPath ["services" "prometheus" "exporters" "node" "extraFlags"] [] config;
  textfileDirectory = let
    count = builtins.length nodeExporterFlags;
    at = builtins.elemAt nodeExporterFlags;
    named = i: let
      item = at i;
      rest = lib.removePrefix textfileOption item;
    in
      if item == textfileOption
      then
        (
          if i + 1 < count
          then at (i + 1)
          else null
        )
      else if lib.hasPrefix "${textfileOption}=" item || lib.hasPrefix "${textfileOption} " item
      then builtins.substring 1 (builtins.stringLength rest) rest
      else null;
    found = lib.findFirst (dir: dir != null) null (builtins.genList named count);
  in
    if found != null
    then found
    else "/var/lib/prometheus-node-exporter-text-files";

  # The configuration as the program's environment variables. comin adds
  # its own COMIN_* variables; a command-line flag wins over any of these.
  variables =
    {
      HOSTENV_COMIN_NODE_NAME = cfg.nodeName;
      HOSTENV_COMIN_API_BASE_URL = cfg.apiBaseUrl;
      HOSTENV_COMIN_TOKEN_FILE = cfg.tokenFile;
      HOSTENV_COMIN_ACTION_TIMEOUT = cfg.actionTimeoutSeconds;
      HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT = cfg.targetObserveTimeoutSeconds;
      HOSTENV_COMIN_INTENT_WAIT = cfg.intentWaitSeconds;
      HOSTENV_COMIN_RUN_TIMEOUT = cfg.runTimeoutSeconds;
      HOSTENV_COMIN_HEALTH_TIMEOUT = cfg.healthTimeoutSeconds;
      HOSTENV_COMIN_STATE_DIR = cfg.stateDir;
    }
    // lib.optionalAttrs cfg.metrics.enable {
      HOSTENV_COMIN_METRICS_FILE = "${cfg.metrics.directory}/hostenv-activate.prom";
    };

  # Both comin's hook and the operators' command.
  wrapper = pkgs.writeShellScriptBin "hostenv-activate" ''
    ${lib.concatLines (lib.mapAttrsToList (name: value: "export ${name}=${lib.escapeShellArg value}") variables)}
    exec ${lib.getExe cfg.package} "$@"
  '';

  # The wrapper in place of the binary, with the package's man page and
  # shell completions beside it.
  configured = pkgs.symlinkJoin {
    name = "hostenv-activate-configured";
    paths = [cfg.package];
    postBuild = ''
      rm $out/bin/hostenv-activate
      ln -s ${lib.getExe wrapper} $out/bin/hostenv-activate
    '';
  };

  # A number of seconds, accepted exactly as the binary accepts it
  # (tests/nix_module.rs evaluates these bounds and compares them with
  # src/config.rs).
  seconds = {
    variable,
    default,
    min,
    max,
    description,
  }:
    mkOption {
      type = types.ints.between min max;
      inherit default;
      description = "${description} (${variable}; ${toString min} to ${toString max} seconds)";
    };
in {
  options.services.hostenv-activate = {
    enable = lib.mkEnableOption "hostenv-activate as comin's post-deployment command";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix {};
      defaultText = lib.literalMD "hostenv-activate built with this system's nixpkgs";
      description = ''
        The hostenv-activate package. Use the flake's
        `packages.''${system}.default` (or `.static`) if this system's
        nixpkgs has too old a Rust toolchain.
      '';
    };

    nodeName = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "node-a";
      description = "This node's logical name, as the provider knows it (HOSTENV_COMIN_NODE_NAME).";
    };

    apiBaseUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://provider.example.com";
      description = ''
        Base URL of the provider API (HOSTENV_COMIN_API_BASE_URL):
        `https://…`, `http://…` or `unix:/path/to.sock`.
      '';
    };

    tokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/hostenv-node-token";
      description = ''
        File holding this node's bearer token (HOSTENV_COMIN_TOKEN_FILE),
        e.g. a sops-nix secret's path. A string, not a Nix path, so the
        secret is never copied into the world-readable Nix store. The
        program waits up to 30 s for it to appear after boot.
      '';
    };

    actionTimeoutSeconds = seconds {
      variable = "HOSTENV_COMIN_ACTION_TIMEOUT";
      default = 900;
      min = 1;
      max = 604800;
      description = "Seconds one deployment action may take; comin waits for its post-deployment command with no time limit, so this bounds how long a hung action can hold up later deployments";
    };

    targetObserveTimeoutSeconds = seconds {
      variable = "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT";
      default = 120;
      min = 1;
      max = 604800;
      description = "Seconds a deactivate waits to see the target node at all";
    };

    intentWaitSeconds = seconds {
      variable = "HOSTENV_COMIN_INTENT_WAIT";
      default = 30;
      min = 0;
      max = 604800;
      description = "Seconds to keep retrying when the provider has no deploy intent yet for the commit";
    };

    runTimeoutSeconds = seconds {
      variable = "HOSTENV_COMIN_RUN_TIMEOUT";
      default = 3600;
      min = 1;
      max = 604800;
      description = "Seconds the whole run may take, from start to exit: every wait ends at it, and an action still running is ended as on its own timeout";
    };

    healthTimeoutSeconds = seconds {
      variable = "HOSTENV_COMIN_HEALTH_TIMEOUT";
      default = 60;
      min = 0;
      max = 604800;
      description = "Seconds the environment's services (the units default.target and hostenv.target want) may take to settle after the user's activate program exits 0; a unit failed, or still activating then, fails the action. 0 turns this health check off";
    };

    metrics = {
      enable = lib.mkEnableOption ''
        a Prometheus metrics file, written at the end of every run for
        node_exporter's textfile collector (HOSTENV_COMIN_METRICS_FILE)
      '';
      directory = mkOption {
        type = types.str;
        default = textfileDirectory;
        defaultText = lib.literalMD ''
          the directory of node_exporter's `--collector.textfile.directory`
          flag when `services.prometheus.exporters.node.extraFlags` sets it,
          else `/var/lib/prometheus-node-exporter-text-files`
        '';
        description = "Directory of the metrics file `hostenv-activate.prom`.";
      };
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/hostenv-activate";
      description = ''
        Directory of the run journal (HOSTENV_COMIN_STATE_DIR), which lets
        a run resume after a crash without redoing finished work. Created
        0700, owned by root.
      '';
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = let
        required = name: {
          assertion = cfg.${name} != null && cfg.${name} != "";
          message = "services.hostenv-activate.${name} must be set when services.hostenv-activate.enable is true.";
        };
      in [
        (required "nodeName")
        (required "apiBaseUrl")
        (required "tokenFile")
        {
          assertion = cfg.tokenFile == null || !lib.hasPrefix builtins.storeDir cfg.tokenFile;
          message = "services.hostenv-activate.tokenFile (${toString cfg.tokenFile}) is in the Nix store, which every user can read; point it at a secret outside the store, e.g. config.sops.secrets.<name>.path.";
        }
        {
          assertion = hasComin && config.services.comin.enable;
          message =
            if hasComin
            then "services.hostenv-activate runs as comin's postDeploymentCommand: set services.comin.enable = true."
            else "services.hostenv-activate runs as comin's postDeploymentCommand: import comin's NixOS module (e.g. comin.nixosModules.comin) and set services.comin.enable = true.";
        }
        {
          assertion = lib.hasPrefix "/" cfg.stateDir;
          message = "services.hostenv-activate.stateDir (${cfg.stateDir}) must be an absolute path.";
        }
        {
          assertion = !cfg.metrics.enable || lib.hasPrefix "/" cfg.metrics.directory;
          message = "services.hostenv-activate.metrics.directory (${cfg.metrics.directory}) must be an absolute path.";
        }
      ];

      environment.systemPackages = [configured];

      # The journal's directory and the run lock's, root's alone.
      systemd.tmpfiles.rules =
        [
          "d ${cfg.stateDir} 0700 root root - -"
          "d /run/hostenv-activate 0700 root root - -"
        ]
        # Created when missing; an existing one (node_exporter's) keeps its
        # owner and mode.
        ++ lib.optional cfg.metrics.enable "d ${cfg.metrics.directory} - - - - -";
    }
    # Only defined when comin's module is there; otherwise the assertion
    # above says what to import, rather than "option does not exist".
    (lib.optionalAttrs hasComin {
      services.comin.postDeploymentCommand = lib.getExe wrapper;
    })
  ]);
}
