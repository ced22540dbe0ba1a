{
  description = "hostenv-activate: performs a hostenv node's deploy intent after each comin deployment";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = {
    self,
    nixpkgs,
  }: let
    inherit (nixpkgs) lib;
    forAllSystems = f:
      lib.genAttrs ["x86_64-linux" "aarch64-linux"] (system: f nixpkgs.legacyPackages.${system});
  in {
    packages = forAllSystems (pkgs: {
      default = pkgs.callPackage ./nix/package.nix {};
      # One static binary (musl), for nodes that take a file rather than a flake.
      static = pkgs.pkgsStatic.callPackage ./nix/package.nix {};
    });

    nixosModules.default = ./nix/module.nix;

    devShells = forAllSystems (pkgs: {
      default = pkgs.mkShell {
        packages = with pkgs; [cargo rustc clippy rustfmt rust-analyzer restic alejandra];
      };
    });

    formatter = forAllSystems (pkgs: pkgs.alejandra);

    checks = forAllSystems (pkgs: let
      own = self.packages.${pkgs.stdenv.hostPlatform.system};
    in
      import ./nix/checks.nix {
        inherit lib pkgs;
        inherit (lib) nixosSystem;
        package = own.default;
        staticPackage = own.static;
        module = self.nixosModules.default;
      });
  };
}
