import { projectVitestConfig } from '../../vitest.shared.js';

export default projectVitestConfig(import.meta.dirname);
