/** @type {AppTypes.Config} */
// The OHIF Viewer's configuration for a dicomweb-gateway (docs/VIEWER.md). viewer/serve.py
// serves this file as /app-config.js with the gateway's DICOMweb base URL in place of the
// placeholder below.
const gateway = '@GATEWAY_URL@';

window.config = {
  name: 'dicomweb-gateway',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  // The warning is about SharedArrayBuffer (cross-origin isolation), which only OHIF's volume
  // rendering needs; the stack viewports that show the gateway's images do without it.
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  maxNumberOfWebWorkers: 2,
  maxNumRequests: {
    interaction: 100,
    thumbnail: 5,
    prefetch: 10,
  },
  showErrorDetails: 'always',
  defaultDataSourceName: 'gateway',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'gateway',
      configuration: {
        friendlyName: 'dicomweb-gateway',
        name: 'gateway',
        qidoRoot: gateway,
        wadoRoot: gateway,
        wadoUriRoot: gateway,
        // QIDO-RS: includefield is honoured; wildcards (*, ?) go to the sites' C-FIND as they
        // are; fuzzy matching is not performed (the gateway says so in a Warning).
        qidoSupportsIncludeField: true,
        supportsWildcard: true,
        supportsFuzzyMatching: false,
        // Images as WADO-RS frames (decoded to uncompressed when the client asks for
        // application/octet-stream), thumbnails from the thumbnail resources.
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsReject: false,
        dicomUploadEnabled: false,
        staticWado: false,
        // Bulk data, frames and rendered resources answer multipart/related.
        singlepart: '',
        bulkDataURI: {
          enabled: true,
        },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn(`dicomweb-gateway answered ${error.status}`);
  },
};
