export {};
//# sourceMappingURL=identity.spec.d.ts.map