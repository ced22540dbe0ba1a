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

  # The configuration as the program's environment variables. comin adds
  # its own COMIN_* variables; a command-line flag wins over any of these.
  variables = {
    HOSTENV_COMIN_NODE_NAME = cfg.nodeName;
    HOSTENV_COMIN_API_BASE_URL = cfg.apiBaseUrl;
    HOSTENV_COMIN_TOKEN_FILE = cfg.tokenFile;
    HOSTENV_COMIN_ACTION_TIMEOUT = cfg.actionTimeoutSeconds;
    HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT = cfg.targetObserveTimeoutSeconds;
    HOSTENV_COMIN_INTENT_WAIT = cfg.intentWaitSeconds;
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

  seconds = default: description:
    mkOption {
      type = types.int;
      inherit default description;
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

    actionTimeoutSeconds = seconds 900 ''
      Seconds one deployment action may take (HOSTENV_COMIN_ACTION_TIMEOUT).
      comin waits for its post-deployment command with no time limit, so
      this bounds how long a hung action can hold up later deployments.
    '';

    targetObserveTimeoutSeconds = seconds 120 ''
      Seconds a deactivate waits to see the target node at all
      (HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT).
    '';

    intentWaitSeconds = seconds 30 ''
      Seconds to keep retrying when the provider has no deploy intent yet
      for the commit (HOSTENV_COMIN_INTENT_WAIT).
    '';
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = let
        required = name: {
          assertion = cfg.${name} != null && cfg.${name} != "";
          message = "services.hostenv-activate.${name} must be set when services.hostenv-activate.enable is true.";
        };
        positive = name: {
          assertion = cfg.${name} > 0;
          message = "services.hostenv-activate.${name} is ${toString cfg.${name}}; set it to a number of seconds greater than 0.";
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
        (positive "actionTimeoutSeconds")
        (positive "targetObserveTimeoutSeconds")
        (positive "intentWaitSeconds")
      ];

      environment.systemPackages = [configured];
    }
    # Only defined when comin's module is there; otherwise the assertion
    # above says what to import, rather than "option does not exist".
    (lib.optionalAttrs hasComin {
      services.comin.postDeploymentCommand = lib.getExe wrapper;
    })
  ]);
}
