export {};
//# sourceMappingURL=backend.spec.d.ts.map