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
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  // Image decoding workers, and requests in flight at once: a federation's sites answer
  // retrievals over a few DIMSE associations each, so more parallel requests only queue.
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
        // QIDO-RS: includefield is honoured; fuzzy matching is not performed (the gateway says
        // so in a Warning). With supportsWildcard the study list's filters send *text*: the
        // gateway passes wildcards to the sites' C-FIND and, when it de-identifies, matches
        // them on a patient's pseudonym as the caller sees it, ignoring case.
        qidoSupportsIncludeField: true,
        supportsWildcard: true,
        supportsFuzzyMatching: false,
        // Images and thumbnails as WADO-RS frames, decoded in the browser: the gateway sends
        // each frame in the transfer syntax the site holds (transfer-syntax=*), which also shows
        // images the gateway cannot decode itself (a broken codestream: its rendered and
        // thumbnail resources answer 501 for them).
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsReject: false,
        dicomUploadEnabled: false,
        staticWado: false,
        // Bulk data and frames come as multipart/related.
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
